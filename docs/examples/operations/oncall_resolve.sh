# docs/operations.md, "Fix it": the parcel of order-3 was recalled by phone, so an operator
# records that the saga was finished by hand.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:resolve]
sagakit resolve order-3 --note "parcel recalled by phone, ticket 4411"
# --8<-- [end:resolve]

# It ended the way it was going, marked resolved, with who and why in its log.
sagakit list --status compensated | grep -q '^order-3 .* compensated, resolved '
test "$(sagakit show order-3 --json | jq -r '.resolution.note')" \
    = "parcel recalled by phone, ticket 4411"
operator=$(python -c 'import getpass, socket; print(getpass.getuser(), socket.gethostname(),
    sep="@")')
test "$(sagakit show order-3 --json | jq -r '.resolution.by')" = "$operator" # --by's default
# Only a saga that needs attention can be resolved.
if sagakit resolve order-1 --note "nothing to do" 2> refused.txt; then exit 1; fi
grep -qx "error: cannot resolve saga 'order-1': it is completed, not needs_attention" refused.txt
