# docs/operations.md, "Deploy new versions" and "Move a saga to a newer version": a worker
# that has order@1 and order@2 runs; order-4 moves to order@2, whose e-mail goes by API.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
sagakit worker --app oncall_shop:sagas > worker.txt 2> worker.log &
worker=$!
trap 'kill -TERM "$worker" 2> /dev/null || true' EXIT
# A worker reports itself as it starts: wait until `versions` lists it (at most 30 s).
for _ in $(seq 300); do
    sagakit versions --json | jq -e --arg pid ":$worker:" \
        'any(.[].workers[]; contains($pid))' > /dev/null && break
    sleep 0.1
done
sagakit versions
# --8<-- [start:upgrade]
sagakit upgrade-saga order-4 --app oncall_shop:sagas --to-version 2 \
    --note "order@1's mail relay is retired"
# --8<-- [end:upgrade]
sagakit show order-4 --follow > /dev/null # returns once the saga has ended
kill -TERM "$worker" && wait "$worker"

sagakit versions > versions.txt
grep -q "^order@1 .*  none (in flight, nobody to drive it)$" versions.txt # it stopped
test "$(sagakit show order-4 --json | jq -r '.status + " " + (.version | tostring)')" \
    = "completed 2"
grep -qx 'email order-4 via api key=order-4:send_confirmation_email:action' effects.log
test "$(sagakit show order-4 --json | jq -r '.events[] | select(.type == "operator_migrated")
    | .data.note')" = "order@1's mail relay is retired"
# Refused, it records nothing: order-1 has finished.
if sagakit upgrade-saga order-1 --app oncall_shop:sagas --to-version 2 --note "no" \
    2> refused.txt; then exit 1; fi
grep -q "^error: cannot migrate saga 'order-1'" refused.txt
