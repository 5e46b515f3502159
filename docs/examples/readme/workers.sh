sagakit worker --app quickstart:order --db sqlite:///orders.db --concurrency 64 &
worker=$!
python place_order.py                      # prints: completed
kill -TERM "$worker" && wait "$worker"     # a worker finishes what it holds, then exits
