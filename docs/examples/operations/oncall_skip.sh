# docs/operations.md, "Fix it": support mailed the customer by hand, so the saga skips the
# e-mail step and goes on as if the step had returned what --result says.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:skip]
sagakit skip order-6 send_confirmation_email --result '{"sent_by": "support"}' \
    --note "mailed the customer from the support desk"
# --8<-- [end:skip]
sagakit worker --once --app oncall_shop:sagas > worker.txt

# It completed without sending an e-mail, and its result is the one support gave.
grep -qx 'order-6  order@1  completed' worker.txt
test "$(grep -c '^email order-6 ' effects.log)" -eq 0
test "$(sagakit show order-6 --json | jq -r '.steps[4].result.sent_by')" = support
# list --result matches what steps returned, not a result an operator gave (the page says so).
test -z "$(sagakit list --result send_confirmation_email.sent_by=support --jsonl)"
test "$(sagakit show order-6 --json | jq -r '.steps[4].skipped_by.note')" \
    = "mailed the customer from the support desk"
# A step that did not fail cannot be skipped; refused, nothing is recorded.
if sagakit skip order-5 charge_payment --result null --note "no" 2> refused.txt; then exit 1; fi
grep -q "^error: cannot skip " refused.txt
