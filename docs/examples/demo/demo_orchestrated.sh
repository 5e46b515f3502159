# docs/demo.md: the orchestrated order saga's four scenarios, then their log.
# --8<-- [start:memory]
sagakit demo --db memory:// # the log is gone when the demo ends
# --8<-- [end:memory]
# --8<-- [start:run]
sagakit demo --db sqlite:///demo.db
sagakit list --db sqlite:///demo.db
id=$(sagakit list --db sqlite:///demo.db --input order_id=A-1003 --limit 1 --jsonl | jq -r .id)
sagakit show "$id" --db sqlite:///demo.db
# --8<-- [end:run]

# One completed, two compensated (partial stock, declined card), one needs attention.
sagakit list --db sqlite:///demo.db --limit 4 --jsonl 2> /dev/null > this-run.jsonl # newest
test "$(jq -r .id this-run.jsonl | grep -c -- "-${id#A-1003-}$")" -eq 4
test "$(jq -r .status this-run.jsonl | sort | tr '\n' ' ')" \
    = "compensated compensated completed needs_attention "
# The one that needs attention is the fraud hold whose parcel had left: the rest was undone.
sagakit show "$id" --db sqlite:///demo.db > a-1003.txt
grep -qx 'undone: charge_payment, debit_loyalty_points, reserve_inventory' a-1003.txt
grep -qx 'not undone: create_shipment' a-1003.txt
test "$(sagakit list --db sqlite:///demo.db --input order_id=A-1002 --limit 1 --jsonl \
    2> /dev/null | jq -r .reason)" \
    = "step 'reserve_inventory' failed: partial stock: reserved 2 GLOBE; short of 1 GLOBE"
# Another run adds four sagas of its own: their ids are fresh, so a kept log never clashes.
before=$(sagakit list --db sqlite:///demo.db --count --json | jq 'map(.total) | add')
sagakit demo --db sqlite:///demo.db > /dev/null
test "$(sagakit list --db sqlite:///demo.db --count --json | jq 'map(.total) | add')" \
    -eq $((before + 4))
