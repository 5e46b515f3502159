# The commands of docs/getting-started.md, in the order the page shows them; a test runs
# this file from a directory holding a fresh copy of the sagakit clone, as `sagakit/`.
# --8<-- [start:project]
mkdir -p shop && cd shop
python3 -m venv .venv
.venv/bin/pip install --quiet "../sagakit[postgres]"
export SAGAKIT_DB=sqlite:///shop.db
# --8<-- [end:project]
# --8<-- [start:run]
.venv/bin/python shop.py 1 1
.venv/bin/python shop.py 2 3
cat effects.log
# --8<-- [end:run]
# --8<-- [start:list]
.venv/bin/sagakit list
.venv/bin/sagakit show order-2
# --8<-- [end:list]
# --8<-- [start:crash]
SHOP_CRASH=reserve .venv/bin/python shop.py 3 1 || echo "shop.py died with status $?"
.venv/bin/sagakit list --status running
# --8<-- [end:crash]
# --8<-- [start:resume]
.venv/bin/sagakit worker --once --app shop:order
.venv/bin/sagakit show order-3
grep order-3 effects.log
# --8<-- [end:resume]
# --8<-- [start:postgres]
export SAGAKIT_DB="postgresql://postgres@127.0.0.1:5432/test?schema=shop"
.venv/bin/sagakit worker --app shop:order --concurrency 16 > worker.log 2>&1 &
worker=$!
.venv/bin/python place_orders.py 8
kill -TERM "$worker" && wait "$worker"
.venv/bin/sagakit list --count
# --8<-- [end:postgres]
