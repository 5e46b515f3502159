# docs/operations.md, "Fix it": retry two orders whose e-mail failed, once the mail server
# is back, and see a retry that would repeat a step refused.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:retry]
sagakit retry order-4 --note "mail server is back"
# --8<-- [end:retry]
# --8<-- [start:from]
sagakit retry order-5 --from send_confirmation_email --note "mail server is back"
sagakit retry order-6 --from charge_payment --note "charge again" || echo "refused: exit $?"
# --8<-- [end:from]
sagakit worker --once --app oncall_shop:sagas > worker.txt

# The retried orders completed, each e-mail sent once; the refused retry recorded nothing.
grep -qx 'order-4  order@1  completed' worker.txt
grep -qx 'order-5  order@1  completed' worker.txt
test "$(grep -c '^email order-4 via smtp key=order-4:send_confirmation_email:action$' \
    effects.log)" -eq 1
test "$(grep -c '^email order-5 ' effects.log)" -eq 1
test "$(sagakit show order-6 --json | jq -r '.status')" = needs_attention
test "$(sagakit show order-6 --json | jq '[.events[] | select(.type == "operator_retry")]')" = "[]"
test "$(sagakit show order-4 --json | jq -r '.events[] | select(.type == "operator_retry")
    | .data.note')" = "mail server is back"
