# docs/operations.md, "Fix it": the customer of order-7, which waits for its item to be
# restocked, calls to cancel.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:cancel]
sagakit cancel order-7 --reason "customer called to cancel"
# --8<-- [end:cancel]
sagakit retry order-4 --note "mail server is back" > /dev/null # running again, past its pivot
# --8<-- [start:refused]
sagakit cancel order-4 --reason "too late" || echo "refused: exit $?"
# --8<-- [end:refused]
sagakit worker --once --app oncall_shop:sagas > worker.txt

# The charge was refunded; the stock it waited for was never reserved, so nothing to release.
grep -qx 'order-7  order@1  compensated  (cancelled by .*: customer called to cancel)' worker.txt
grep -qx 'refund pay-order-7 key=order-7:charge_payment:compensation' effects.log
test "$(grep -c 'res-order-7' effects.log)" -eq 0
test "$(sagakit show order-7 --json | jq -r '.cancel.reason')" = "customer called to cancel"
