# docs/demo.md, "Running it against your own worker": one process starts the orders, a
# worker in another carries them through, over the same service databases.
# --8<-- [start:start]
python demo_start_orders.py
# --8<-- [end:start]
# --8<-- [start:worker]
SAGAKIT_ORDER_SERVICES=./services sagakit worker \
    --app sagakit.demo:from_environment --db sqlite:///orders.db --once
# --8<-- [end:worker]

test "$(sagakit list --db sqlite:///orders.db --status completed --jsonl | wc -l)" -eq 2
