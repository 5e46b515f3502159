# docs/operations.md, "Run the workers": a worker's log as JSON, and --max-attempts.
export SAGAKIT_DB=sqlite:///shop.db
bash oncall_morning.sh > /dev/null # the saga log the page starts from
# --8<-- [start:max-attempts]
sagakit retry order-4 --note "is the mail server back?"
MAIL_SERVER_DOWN=1 sagakit worker --once --app oncall_shop:sagas --max-attempts 3 \
    --log-format json 2> worker.jsonl
jq -r 'select(.level == "error") | .saga_id + ": " + .message' worker.jsonl
# --8<-- [end:max-attempts]

# It was still down: three more attempts, then the saga needs attention again.
test "$(sagakit show order-4 --json | jq -r '.status')" = needs_attention
test "$(sagakit show order-4 --json | jq '.steps[4].attempts')" -eq 6
# Every line is one JSON object; a failed step's line carries the saga's fields.
jq -e -s 'length > 0' worker.jsonl > /dev/null
jq -e -s 'map(select(.level == "warning" and .saga_id == "order-4"))[0]
    | .saga_name == "order" and .saga_version == 1 and .step == "send_confirmation_email"
      and .attempt == 4 and .key == "order-4:send_confirmation_email:action"' worker.jsonl \
    > /dev/null
