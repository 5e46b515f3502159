# docs/operations.md, "Fix it": the bank says refund-9 settled, the warehouse that order-7's
# item is back; each message wakes the step waiting for it.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:signal]
sagakit signal refund-9 settled --payload '{"settled_at": "2026-12-03"}'
sagakit signal order-7 restocked
# --8<-- [end:signal]
sagakit worker --once --app oncall_shop:sagas > worker.txt
# --8<-- [start:ended]
sagakit signal refund-9 settled --payload '{"settled_at": "2026-12-04"}' || echo "refused: exit $?"
# --8<-- [end:ended]

grep -qx 'refund-9  refund@1  completed' worker.txt
grep -qx 'order-7  order@1  completed' worker.txt
grep -qx 'settled refund-9 on 2026-12-03 key=refund-9:record_settlement:action' effects.log
test "$(sagakit show refund-9 --json | jq -r '.steps[1].result.settled_at')" = 2026-12-03
