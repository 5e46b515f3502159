import asyncio

from sagakit import Event, Service, Transaction, open_broker

PAYMENTS = "CREATE TABLE IF NOT EXISTS payments (order_id TEXT PRIMARY KEY)"


async def main() -> None:
    broker = await open_broker("memory://")  # or redis://, nats://, amqp://
    payments = Service("payments", "payments.db", broker, stream="orders", schema=PAYMENTS)
    orders = Service("orders", "orders.db", broker, stream="orders")
    paid = asyncio.Event()

    @payments.on("OrderCreated")
    def charge(event: Event, tx: Transaction) -> None:  # one local transaction with the inbox
        tx.db.execute("INSERT INTO payments VALUES (?)", (event.data["order_id"],))
        tx.emit("PaymentCompleted", {"order_id": event.data["order_id"]})  # the outbox

    @orders.on("PaymentCompleted")
    def mark_paid(event: Event, tx: Transaction) -> None:
        print("paid", event.data["order_id"], "in saga", event.correlation_id)
        paid.set()

    stop = asyncio.Event()
    running = [asyncio.create_task(service.run(stop)) for service in (payments, orders)]
    await asyncio.gather(payments.ready.wait(), orders.ready.wait())
    await orders.publish("OrderCreated", {"order_id": "7"}, correlation_id="order-7")
    await asyncio.wait_for(paid.wait(), timeout=30)
    stop.set()
    await asyncio.gather(*running)
    await asyncio.gather(payments.close(), orders.close(), broker.close())


if __name__ == "__main__":
    asyncio.run(main())
