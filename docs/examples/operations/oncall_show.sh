# docs/operations.md, "Read what happened to one saga".
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:show]
sagakit show order-3
# --8<-- [end:show]
# --8<-- [start:json]
sagakit show order-3 --json | jq -c '.steps[] | [.name, .status, .compensation_error.message]'
# --8<-- [end:json]
# --8<-- [start:graph]
sagakit graph --db sqlite:///shop.db order-3 > order-3.mmd
sagakit graph oncall_shop:order_v1 > order.mmd
# --8<-- [end:graph]

# The header says what was undone and what could not be; the parts follow.
sagakit show order-3 > order-3.txt
grep -q '^saga order-3  order@1  needs_attention  started ' order-3.txt
grep -qx 'undone: charge_payment, reserve_stock' order-3.txt
grep -qx 'not undone: create_shipment' order-3.txt
grep -q '^steps' order-3.txt && grep -q '^attempts' order-3.txt && grep -q '^timeline' order-3.txt
grep -q 'key order-3:create_shipment:compensation' order-3.txt
test "$(sagakit show order-3 --json | jq -r '.steps[2].compensation_error.type')" \
    = sagakit.errors.CompensationImpossible
# The instance in its statuses' colours; the definition with its kinds.
grep -q '^flowchart TD' order-3.mmd
grep -q 'create_shipment (compensatable, compensation_failed)' order-3.mmd
grep -q 'confirm_order (pivot)' order.mmd
