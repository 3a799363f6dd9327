# Sourced by the README's commands: installs the Debian packages the build needs when they are
# missing (OpenSSL's libcrypto for SQLCipher, found through pkg-config), plus those named in
# EXTRA_PACKAGES_IF_MISSING as "command-or-path:package" pairs.
missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists libcrypto 2>/dev/null || missing+=(libssl-dev)
for pair in ${EXTRA_PACKAGES_IF_MISSING:-}; do
  probe=${pair%%:*}
  if ! command -v "$probe" >/dev/null 2>&1 && ! ls $probe >/dev/null 2>&1; then
    missing+=("${pair#*:}")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
