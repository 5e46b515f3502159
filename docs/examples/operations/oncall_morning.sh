# The saga log every example of docs/operations.md starts from: yesterday's order went
# through; this morning the mail server was down while the worker ran. The other scripts
# run this one first.
# --8<-- [start:setup]
export SAGAKIT_DB=sqlite:///shop.db
python oncall_shop.py yesterday
sagakit worker --once --app oncall_shop:sagas
python oncall_shop.py today
MAIL_SERVER_DOWN=1 sagakit worker --once --app oncall_shop:sagas --max-attempts 3
# --8<-- [end:setup]
test "$(sagakit list --status needs_attention --jsonl | wc -l)" -eq 4
test "$(sagakit list --waiting --jsonl | wc -l)" -eq 2
