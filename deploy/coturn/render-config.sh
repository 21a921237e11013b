#!/bin/sh
# Render coturn's config from the template, one `static-auth-secret=` line per secret file (docs/operations.md, "TURN").
#   render-config.sh TEMPLATE OUTPUT SECRET_FILE [OLD_SECRET_FILE]
# During a rotation pass the new secret and the old one: coturn accepts credentials made with either, so credentials
# handed out before the switch keep working until they expire ([turn] ttl_s).
set -eu
template=$1; out=$2; shift 2
[ $# -ge 1 ] || { echo "usage: $0 TEMPLATE OUTPUT SECRET_FILE [OLD_SECRET_FILE]" >&2; exit 2; }
umask 027
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
grep -v '^static-auth-secret=' "$template" > "$tmp"
for f in "$@"; do
  secret=$(tr -d ' \t\r\n' < "$f")
  case $secret in
    ''|*[!!-~]*) echo "$0: $f: the secret must be printable ASCII without spaces" >&2; exit 1 ;;
  esac
  [ ${#secret} -ge 16 ] || { echo "$0: $f: the secret must be at least 16 characters" >&2; exit 1; }
  printf 'static-auth-secret=%s\n' "$secret" >> "$tmp"
done
mv "$tmp" "$out"
trap - EXIT
