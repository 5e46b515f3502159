# docs/operations.md, "Find the sagas that need you": narrow the counts down to ids.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:list]
sagakit list --status needs_attention --name order
sagakit list --waiting
# --8<-- [end:list]
# --8<-- [start:filters]
sagakit list --failing-step send_confirmation_email --count
sagakit list --error "fraud review"
sagakit list --input shipping=same_day --result create_shipment.parcel=parcel-order-3
sagakit list --waiting-for restocked --created-after 1h
# --8<-- [end:filters]
# --8<-- [start:jsonl]
sagakit list --status needs_attention --jsonl | jq -r '.id + "  " + .reason'
sagakit list --stuck 10m --jsonl | jq -r '.id + "  " + .reason'
# --8<-- [end:jsonl]

# What the page says of them. Piped, the table is plain text: a heading, then a line a saga.
test "$(sagakit list --status needs_attention --name order | wc -l)" -eq 5
sagakit list --waiting | grep -q "^order-7 .* waits for 'restocked' until "
sagakit list --waiting | grep -q "^refund-9 .* waits for 'settled'$"
test "$(sagakit list --waiting-for settled --jsonl | jq -r .id)" = refund-9
test "$(sagakit list --failing-step send_confirmation_email --jsonl | wc -l)" -eq 3
test "$(sagakit list --error "FRAUD REVIEW" --jsonl | jq -r .id)" = order-3 # any case
test "$(sagakit list --result create_shipment.parcel=parcel-order-3 --jsonl | jq -r .id)" = order-3
# A wait still on time is no saga stuck, however short the duration asked for.
test -z "$(sagakit list --stuck 0s --jsonl)"
# More than --limit: the cursor of the next page goes to stderr, the lines stay sagas.
test "$(sagakit list --limit 3 2> more.txt | wc -l)" -eq 4
grep -q '^more sagas match: add --after ' more.txt
cursor=$(sed 's/.*--after //' more.txt)
test "$(sagakit list --limit 3 --after "$cursor" --jsonl 2> /dev/null | jq -r .id | head -1)" \
    = order-5
