# Sourced by scripts/demo and scripts/test: they install packages with apt,
# start libvirtd, boot containers and write /var/cache/keel, so they run as
# root. Started by another user, they run themselves again through sudo when
# it exists, and otherwise stop with a message saying what to do.
#
# Usage: as_root "$0" "$@"   (returns only when already root)
as_root() {
  local self=$1
  shift
  [ "$(id -u)" = 0 ] && return 0
  local name
  name=$(basename "$self")
  if command -v sudo >/dev/null 2>&1; then
    echo "$name: needs root; running it again with sudo" >&2
    # sudo resets PATH and HOME; keep this user's Rust toolchain (cargo and
    # rustup live under HOME unless CARGO_HOME/RUSTUP_HOME say otherwise).
    exec sudo env \
      "PATH=$PATH" \
      "CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}" \
      "RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}" \
      "$self" "$@"
  fi
  echo "$name: needs root (apt, libvirtd, systemd-nspawn, /var/cache/keel) and sudo is not installed; run it as root" >&2
  exit 1
}
