# The web side records three invoices; a worker pass then drives them, and the saga log
# says what became of them.
rm -f billing.db billing.db-*
# --8<-- [start:commands]
python billing_app.py
sagakit worker --once --app billing_app:invoice --db sqlite:///billing.db
sagakit list --db sqlite:///billing.db --status completed --count
# --8<-- [end:commands]
counted=$(sagakit list --db sqlite:///billing.db --status completed --count)
grep -q '^send_invoice@1  completed  3$' <<<"$counted"
