#!/usr/bin/env bash
# A three-person conversation with no server: Alice, Bob and Carol each have a profile, and MLS
# messages travel between them as files. Prints what each of them sees.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin mlschat
mlschat="$PWD/target/debug/mlschat"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export MLSCHAT_DATA_DIR="$work/profiles"
as() { local who=$1; shift; "$mlschat" --profile "$who" "$@"; }
say() { printf '\n== %s\n' "$*"; }

say "Three people create their identities"
for who in alice bob carol; do as "$who" init --user "$who" --device laptop | head -2; done

say "Bob and Carol hand Alice a KeyPackage each (a file)"
as bob keypackage --out bob.kp
as carol keypackage --out carol.kp

say "Alice creates 'team' and adds both in one commit; the Welcome file goes to both"
as alice group create team
as alice group add team bob.kp carol.kp --out add.commit --welcome-out add.welcome
as bob receive add.welcome
as carol receive add.welcome
# A joiner names the group for itself (by a prefix of its id).
group=$(as bob -o json group list | sed 's/.*"id":"\([0-9a-f]*\)".*/\1/')
as bob group rename "${group:0:8}" team
as carol group rename "${group:0:8}" team

say "Alice writes; Bob answers (refreshing his keys first, as every joiner does)"
as alice send team "Hello Bob and Carol!" --out m1
as bob receive m1
as carol receive m1
as bob send team "Hi Alice, hi Carol." --out m2
as alice receive m2
as carol receive m2

say "Alice removes Carol; Carol learns it and can read nothing after"
as alice group remove team carol --out remove.commit
as bob receive remove.commit
as carol receive remove.commit
as alice send team "Just the two of us now." --out m3
as bob receive m3
as carol receive m3 || echo "(carol cannot read it: exit code $?)"

say "Alice's history"
as alice history team

say "Everyone still in the group agrees on its state"
a=$(as alice -o json group list | sed 's/.*"epoch_authenticator":"\([0-9a-f]*\)".*/\1/')
b=$(as bob -o json group list | sed 's/.*"epoch_authenticator":"\([0-9a-f]*\)".*/\1/')
echo "alice: $a"
echo "bob:   $b"
[ "$a" = "$b" ] && echo "same epoch authenticator: in sync"
