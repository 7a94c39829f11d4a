# shellcheck shell=sh
# Sourced by the test guests' report scripts (guest-check.sh,
# tier2-facts.sh); read by the harness as qemu/sealed.rs describes.
#
# seal_block BEGIN END ID prints its stdin as a sealed block:
#   BEGIN ID / the lines / END ID <sha256 of the lines, each with "\n">
# journald drops trailing whitespace and empty lines when it forwards a
# unit's output to the console (ipvsadm pads its columns with spaces), so
# they are dropped here first: the seal covers exactly what arrives.
seal_block() {
    sealed_body=$(sed -e 's/[[:space:]]*$//' -e '/^$/d')
    sealed_sum=$(printf '%s\n' "$sealed_body" | sha256sum | cut -d' ' -f1)
    printf '%s %s\n%s\n%s %s %s\n' "$1" "$3" "$sealed_body" "$2" "$3" "$sealed_sum"
}
