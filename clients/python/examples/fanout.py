"""Fan-out: one publisher, three subscribers, each gets every message.

    python examples/fanout.py [HOST:PORT]
"""

import sys

import courier

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"
COUNT = 10

with courier.Publisher(addr) as publisher:
    publisher.create_topic("fanout")
    subscribers = [courier.Subscriber(addr) for _ in range(3)]
    for subscriber in subscribers:
        subscriber.subscribe("fanout")

    with publisher.pipeline() as pipe:  # all in flight, completions collected
        for i in range(COUNT):
            pipe.publish("fanout", f"message {i}")

    for n, subscriber in enumerate(subscribers, 1):
        received = []
        while len(received) < COUNT:
            received.extend(m.payload.decode() for m in subscriber.pull("fanout"))
        print(f"subscriber {n} got {len(received)}: {received[0]} .. {received[-1]}")
        subscriber.end_session()
        subscriber.close()

    publisher.delete_topic("fanout")
