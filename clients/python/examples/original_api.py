"""The original tool's API, exactly as its users wrote it: nothing but
registerPublisher(), createTopic(t), send(t, m), deleteTopic(t) on the
publisher side and registerSubscriber(), subscribe(t), pull(t) on the
subscriber side. A program written for that tool runs on Courier by
importing ``courier`` instead. Run a broker first (`broker`), then:

    python examples/original_api.py            # the broker at localhost:5555
    python examples/original_api.py HOST:PORT  # another one
"""

import sys

import courier

where = sys.argv[1:2]  # empty: Publisher() and Subscriber() use localhost:5555

publisher = courier.Publisher(*where)
publisher.registerPublisher()
publisher.createTopic("greetings")

subscriber = courier.Subscriber(*where)
subscriber.registerSubscriber()
subscriber.subscribe("greetings")

publisher.send("greetings", "Hello")
publisher.send("greetings", b"World")

for message in subscriber.pull("greetings"):
    print(message.topic, message.offset, message.payload.decode())

publisher.deleteTopic("greetings")
