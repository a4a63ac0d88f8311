"""The original walk-through: create a topic, publish, subscribe, pull,
delete. Run a broker first (`broker`), then:

    python examples/walkthrough.py [HOST:PORT]
"""

import sys

import courier

addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:5555"

publisher = courier.Publisher(addr)
publisher.registerPublisher()
publisher.createTopic("news")

subscriber = courier.Subscriber(addr)
subscriber.registerSubscriber()
subscriber.subscribe("news")

publisher.send("news", "Hello")
publisher.send("news", b"World")

for message in subscriber.pull("news"):
    print(f"{message.topic} #{message.offset}: {message.payload.decode()}")

publisher.deleteTopic("news")
subscriber.close()
publisher.close()
