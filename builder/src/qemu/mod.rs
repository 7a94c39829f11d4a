//! QEMU validation: boot images before any card is written.
//!
//! By tier: `tier1` boots each image as itself (the Pi's SD image on
//! `raspi4b`, the director's disk under OVMF) and judges what the guest
//! reports; `tier2` runs the whole cluster on a closed virtual segment and
//! its failover scenarios with Kubernetes TEST DOUBLES; `tier3` runs the
//! real control plane on that segment until `habuild status` finds it
//! healthy. What the tiers share is here: `machine` (kernel
//! command line, NIC addresses), `prepare` (throw-away copies with a
//! test-only unit), `console` (a guest's serial console through named
//! stages), `sealed` (fact blocks read back from a console), `kvm` (whether
//! UEFI guests get KVM). Another tier is one more folder beside these.

pub mod console;
pub mod kvm;
pub mod machine;
pub mod prepare;
pub mod sealed;
pub mod tier1;
pub mod tier2;
pub mod tier3;
