# --8<-- [start:cli]
python ticket_sale.py                         # prints: B-1001 completed, B-1002 compensated
sagakit list --db sqlite:///tickets.db        # one row per booking, as for any saga
sagakit show B-1002 --db sqlite:///tickets.db # its steps and the events behind each record
# --8<-- [end:cli]
sagakit list --db sqlite:///tickets.db --status compensated | grep -q B-1002
sagakit show B-1002 --db sqlite:///tickets.db | grep -q "SeatReleased from seats"
