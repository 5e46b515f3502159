# docs/operations.md, "When the database goes away": a worker that waits for its database,
# and a PostgreSQL saga log with a time limit on each statement. Needs the PostgreSQL
# server at 127.0.0.1:5432 (user postgres, database test); the schema is this run's own.
schema="docs_ops_$$_$RANDOM"
trap 'psql -q -h 127.0.0.1 -U postgres test -c "DROP SCHEMA IF EXISTS $schema CASCADE" \
    > /dev/null 2>&1' EXIT
# --8<-- [start:give-up]
sagakit worker --app oncall_shop:sagas --db postgresql://postgres@127.0.0.1:1/test \
    --give-up-after 2 2> worker.log || echo "worker exited with status $?"
# --8<-- [end:give-up]
lost="worker: lost the database: PostgreSQL saga log postgresql://postgres@127.0.0.1:1/test"
grep -q "WARNING sagakit.cli: $lost: nothing accepts connections there" worker.log
grep -q "ERROR sagakit.cli: worker: gave up on the database after 2.0 s" worker.log
test "$(grep -c 'lost the database' worker.log)" -eq 1 # said once, not once a try
# --8<-- [start:timeout]
export SAGAKIT_DB="postgresql://postgres@127.0.0.1:5432/test?schema=$schema&timeout=5"
sagakit migrate
python oncall_shop.py > /dev/null
sagakit worker --once --app oncall_shop:sagas
sagakit list --count
# --8<-- [end:timeout]
test "$(sagakit list --status completed --jsonl | wc -l)" -eq 4
# A password is never printed: not in errors, not in logs.
if sagakit list --db "postgresql://app:s3cret@127.0.0.1:1/test" 2> refused.txt; then exit 1; fi
grep -q "postgresql://app:\*\*\*@127.0.0.1:1/test" refused.txt
test "$(grep -c s3cret refused.txt)" -eq 0
