# docs/operations.md, "Fix it", many at once: every order the mail outage left, in one go.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:dry-run]
sagakit retry --all --name order --error "mail server"
# --8<-- [end:dry-run]
test "$(sagakit list --status needs_attention --jsonl | wc -l)" -eq 4 # the dry run did nothing
test -z "$(sagakit show order-4 --json | jq '.events[] | select(.type == "operator_retry")')"
# --8<-- [start:yes]
sagakit retry --all --name order --error "mail server" --yes --note "mail server is back"
# --8<-- [end:yes]
# --8<-- [start:resolve]
sagakit resolve --all --input shipping=same_day --yes --note "parcels recalled by phone"
# --8<-- [end:resolve]
sagakit worker --once --app oncall_shop:sagas > worker.txt

for order in order-4 order-5 order-6; do
    grep -qx "$order  order@1  completed" worker.txt
    test "$(grep -c "^email $order via smtp " effects.log)" -eq 1
done
test -z "$(sagakit list --status needs_attention --jsonl)"
sagakit list --status compensated | grep -q '^order-3 .* compensated, resolved '
