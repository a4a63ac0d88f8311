//! The `--help` texts: the tool's, and one per scenario. Kept apart from the
//! parser so that both stay readable.

pub const MAIN: &str = "\
bench: measure a courier broker, and check what it delivered

usage: bench SCENARIO [OPTIONS]

Scenarios:
  send          P publishers, D publishes in flight each: acknowledged publishes/s,
                MB/s, publish latency
  fanout        P publishers, S subscribers over T topics: deliveries/s and
                end-to-end latency
  latency       a fixed publish rate: end-to-end and acknowledgement latency
                measured from the intended send time (coordinated omission)
  create-topic  N clients creating and deleting topics: create+delete pairs/s
                and the latency of a pair
  idle          open N idle connections; with --broker-pid, the broker's RSS
                per connection
  retained      publish N messages nobody pulls; with --broker-pid, the
                broker's RSS per retained message
  fairness      a probe's round-trip latency alone, then beside attackers
                abusing the broker (--attack flood|pulls|fanout|churn)
  recovery      fill a log with N messages, then time a broker's start on it
  disk          the disk's own ceiling: 4 KiB appends each followed by
                fdatasync (p50 and MB/s), no broker; --read: sequential
                reads, from the page cache and from a cold cache
  replay        fill a retained topic with N messages, then read it from the
                start by subscription and by FETCH: msgs/s and MB/s; from
                disk with --cache-bytes
  backlog       a subscriber 10 caches behind catches up from the log while a
                probe on another topic measures latency

Common options:
  --broker HOST[:PORT]
                      measure that broker (the port defaults to 5555);
                      without it bench starts one inside its own process on
                      127.0.0.1 and a free port
  --messages N        messages (create-topic: topics) to measure, over all
                      clients, 1 to 10^12; suffixes k, M, G (10^3) and KiB,
                      MiB, GiB (2^10) are accepted
  --duration SECS     measure for this long, more than 0 and at most 3600;
                      with --messages, whichever ends first; default 5 when
                      neither is given; suffixes s and ms are accepted
  --warmup SECS       run this long before measuring, 0 to 600 (default 0)
  --json              print one JSON object instead of the human report
  --hgrm FILE         write the latency distribution (HdrHistogram .hgrm,
                      values in microseconds)
  --fsync MODE        the in-process broker's durability: memory-only (the
                      default), or a log in a fresh temporary directory with
                      always, interval:MS or never (as broker --fsync)
  --tls               the clients speak TLS, trusting --ca PEM (default: the
                      system's CAs); the in-process broker then serves TLS
                      with --tls-cert PEM and --tls-key PEM (the certificate
                      must name 127.0.0.1)
  --user NAME, --token TOKEN
                      credentials, for a broker with --users
  --quiet             no progress line on stderr
  -h, --help          this help; bench SCENARIO --help for a scenario's options
  -V, --version       print the version

Numbers out of range are refused with the accepted range; each scenario's
--help gives the range of its own flags.

Every run verifies what it measured: each acknowledged message reached each
subscriber of its topic exactly once and in order per publisher. A loss, a
duplicate, a reorder or a failed request makes the exit status 1; bad
arguments exit with 2.

Examples (the maintainers' reference figures):
  bench fanout --publishers 1 --subscribers 1 --batch 100         1 -> 1, 128 B
  bench fanout --publishers 1 --subscribers 8 --batch 100         1 -> 8 fan-out
  bench fanout --publishers 16 --subscribers 1 --batch 100        16 -> 1
  bench send --pipeline 1                                         p50 one in flight
  bench fanout --size 65536 --pipeline 32                         64 KiB messages
  bench create-topic --clients 8 --pipeline 32
";

pub const SEND: &str = "\
bench send: acknowledged publishes per second, MB/s and publish latency

usage: bench send [--publishers P] [--pipeline D] [--batch K] [--size BYTES]
                  [--topics T] [--subscribers S] [common options]

  --publishers P    publisher connections, one thread each, 1 to 1024
                    (default 1)
  --pipeline D      publish requests in flight per publisher, 1 to 4096; 1
                    sends one at a time and waits for its acknowledgement
                    (default 16)
  --batch K         messages per publish frame, 1 to 65536; 1 sends single
                    PUBLISH requests, more sends PUBLISH_BATCH (default 1)
  --size BYTES      payload size, 20 (the bench header) to 64MiB, and within
                    the broker's payload limit; KiB and MiB suffixes are
                    accepted (default 128)
  --topics T        topics, 1 to 10000; publishers are spread over them
                    (default 1)
  --subscribers S   subscribers pulling as in fanout, 0 to 1024 (default 0:
                    the broker acknowledges and drops, which measures
                    publishing alone)

--publishers plus --subscribers is at most 1024 (one thread each), and a
frame of --batch messages of --size bytes must fit the broker's frame limit.

The latency is per request: from queuing the publish to reading its
acknowledgement. A full topic holds publishes until there is room rather
than refusing them, so publishers are paced by their pipelines; a TOPIC_FULL
(after the broker's --publish-hold) is counted in `retries`, never lost, and
should stay 0.
";

pub const FANOUT: &str = "\
bench fanout: deliveries per second and end-to-end latency

usage: bench fanout [--publishers P] [--subscribers S] [--topics T]
                    [--pipeline D] [--batch K] [--size BYTES]
                    [--pull-depth D] [common options]

  --publishers P    publisher connections, 1 to 1024 (default 1)
  --subscribers S   subscriber connections, 1 to 1024 (default 1)
  --topics T        topics, 1 to 10000 (default 1). With at least as many
                    clients as topics, client i takes topic i % T; with
                    fewer, client i takes every topic t with t % clients == i
  --pipeline D      publish requests in flight per publisher, 1 to 4096
                    (default 16)
  --batch K         messages per publish frame, 1 to 65536 (default 1)
  --size BYTES      payload size, 20 to 64MiB (default 128)
  --pull-depth D    pulls each subscriber keeps in flight, 1 to 64 (default
                    1: its acknowledgement rides on the next pull; more
                    acknowledge with ACK requests beside the pulls)

--publishers plus --subscribers is at most 1024, and a frame of --batch
messages of --size bytes must fit the broker's frame limit.

Subscribers pull up to 65536 messages at a time, waiting up to 100 ms, and
acknowledge each batch with the next pull. End-to-end latency is from the
publisher's send time (written in the payload) to the pull reply that
carried the message.
";

pub const LATENCY: &str = "\
bench latency: latency under a known load

usage: bench latency [--rate MSGS_PER_S] [--publishers P] [--subscribers S]
                     [--topics T] [--batch K] [--size BYTES] [--pipeline D]
                     [--pull-depth D] [--relay] [common options]

  --rate R          messages per second over all publishers, 1 to 10^8
                    (default 10000)
  --publishers P    publisher connections sharing the rate, 1 to 1024
                    (default 1)
  --subscribers S   subscriber connections, 1 to 1024 (default 1)
  --topics T        topics, 1 to 10000 (default 1)
  --batch K         messages per publish frame, 1 to 65536 (default 1);
                    frames go out at R / K per second
  --size BYTES      payload size, 20 to 64MiB (default 128)
  --pipeline D      publish requests a publisher may have unanswered, 1 to
                    4096 (default 64); a send waits only while D are
                    unanswered
  --pull-depth D    pulls each subscriber keeps in flight, 1 to 64 (default
                    4 here, 1 in send and fanout; the broker's
                    max_waiting_pulls bounds it)
  --relay           no broker: one publisher sends the same schedule through
                    a bare TCP relay in this process to one subscriber,
                    measured the same way (the machine's ceiling)

Each publisher sends on a fixed schedule, as wrk2 does, without waiting
for the previous reply (up to --pipeline unanswered), so it keeps to the
schedule as the relay's publisher does. Both latencies are measured from
the time a message was meant to be sent, not when it was: a publisher held
up by a full window sends late, and that lateness counts
(coordinated-omission correction). The report also shows how late the
sends went out, which includes the bench's own timer precision.
Acknowledgements are read when the window needs room, so the publish
latency is an upper bound (up to D intervals late); the end-to-end latency,
taken at the subscriber, is the figure to compare with --relay.
";

pub const CREATE_TOPIC: &str = "\
bench create-topic: topics created (and deleted) per second

usage: bench create-topic [--clients N] [--pipeline D] [common options]

  --clients N       client connections, one thread each, 1 to 1024
                    (default 8)
  --pipeline D      requests in flight per client, 1 to 4096 (default 1: one
                    round trip each)
  --messages N      topics to create (and delete) over all clients, 1 to
                    10^12
  --warmup SECS     0 to 600 (default 0)

Each client creates a topic, deletes it, and goes on with the next name.
The two requests share one pipeline, so the unit measured is the pair:
create+delete pairs per second, and each pair's latency from queuing its
create to the reply to its delete (operation `create_delete`).
";

pub const IDLE: &str = "\
bench idle: the cost of idle connections

usage: bench idle [--connections N] [--broker HOST:PORT [--broker-pid PID]]
                  [--duration SECS] [common options]

  --connections N   connections to open (handshake only), 1 to 1000000;
                    --clients is the same (default 1000)
  --broker-pid PID  the broker's process id: its RSS (VmRSS in /proc/PID/status)
                    is read before and after, and the difference divided by N
  --duration SECS   hold the connections this long before closing, 0 to 3600
                    (default 0)

The connections are opened one after another from one thread and timed
(TCP connect and HELLO). As for retained, a freshly started broker gives
the honest figure. Each needs a file descriptor on both sides: raise
`ulimit -n` for large N.
";

pub const RETAINED: &str = "\
bench retained: the cost of retained messages

usage: bench retained [--messages N] [--size BYTES] [--topics T] [--batch K]
                      [--pipeline D] [--broker HOST:PORT [--broker-pid PID]]
                      [common options]

  --messages N      messages to publish and leave unpulled, 1 to 10^12
                    (default 100000)
  --size BYTES      payload size, 20 to 64MiB (default 128)
  --topics T        topics, 1 to 10000, one subscriber on all of them
                    (default 1)
  --batch K         messages per publish frame, 1 to 65536 (default 100)
  --pipeline D      publish requests in flight, 1 to 4096 (default 16)
  --broker-pid PID  read the broker's RSS before publishing, after, and after
                    the subscriber has pulled everything

One subscriber subscribes and does not pull while N messages are published;
the broker's STATS must then show them retained. The subscriber then pulls
them all, checking them as every scenario does. The broker's backlog limits
bound N x size per topic (an in-process broker is started without them).

Measure against a freshly started broker: memory freed by an earlier run
stays with the broker's allocator and would be reused, hiding the cost.
";

pub const REPLAY: &str = "\
bench replay: reading a retained topic from the start

usage: bench replay [--messages N] [--size BYTES] [--batch K] [--pipeline D]
                    [--pull-depth D] [--cache-bytes N [--fsync MODE]]
                    [--broker HOST:PORT] [common options]

  --messages N      messages to publish, then read back, 1 to 10^12
                    (default 100000; with --cache-bytes 10.5 caches' worth,
                    at least 100000)
  --size BYTES      payload size, 20 to 64MiB (default 1024)
  --batch K         messages per publish frame, 1 to 65536 (default 100)
  --pipeline D      publish requests in flight, 1 to 4096 (default 16)
  --pull-depth D    pulls in flight while replaying, 1 to 64 (default 1)
  --cache-bytes N   read from disk: the in-process broker is durable, on a
                    fresh temporary data directory, with this --cache-bytes
                    (64KiB to 1TiB), so all but the newest cache's worth of
                    the topic is read back from its log
  --fsync MODE      with --cache-bytes, the broker's sync mode (default
                    always)

Creates a retained topic (kept without bounds, no subscriber), publishes N
messages, then times two reads of it from offset 0: a subscriber subscribed
from 'earliest' pulling frame-sized batches (operation 'replay'), and FETCH
without a session (operation 'fetch'). Every message read is checked: its
offset and the index it carries. The broker's backlog limits bound N x size
(an in-process broker is started without them).

Without --cache-bytes the in-process broker is memory-only (or per --fsync,
with its default 256 MiB cache): the reads are from memory. With it, 'replay'
and 'fetch' read the log while its files are in the page cache (just
written); then the log's files are read sequentially ('log_read'), and, if
the page cache can be dropped (writing /proc/sys/vm/drop_caches: root only;
it is the whole machine's cache), everything again from a cold cache, the
cache dropped before each: the files ('log_read_cold': the disk's own
sequential read speed), the subscription ('replay_cold'), FETCH
('fetch_cold') and the files again ('log_read_cold_again': a virtual
machine's host may cache its disk, so a second cold read can be faster than
the first; the notes compare the replays with the faster). When the drop is
refused, a note says why and the cold reads are not measured; the run still
passes. The counts NAME_disk_reads and
NAME_disk_messages are the broker's STATS disk_reads and disk_messages_read
during each read: they prove where the messages came from. A read that
took nothing from the log fails the run.
";

pub const DISK: &str = "\
bench disk: the disk's own fdatasync'd append latency and bandwidth, or
its sequential read speed

usage: bench disk [--read] [--messages N] [--size BYTES] [--duration SECS]
                  [common options]

  --messages N      blocks to append, 1 to 10^12 (default 2000; with
                    --read, 1 GiB's worth)
  --size BYTES      bytes per block, 20 to 64MiB (default 4096)
  --read            measure sequential reads instead (below)

Appends blocks to a fresh file in the temporary directory ($TMPDIR, where
an in-process durable broker keeps its log), each write followed by
fdatasync, and reports the latency of one append+fdatasync and the
bandwidth. No broker is involved: this is the disk's ceiling, against which
the durable figures are judged (one fdatasync per block is the worst case;
a broker's group commit syncs many records at once).

With --read: writes the blocks to a fresh file there and fsyncs it once
('write_fsync'), then reads it from start to end in 1 MiB reads twice: while
it is in the page cache, just written ('read_page_cache'), and twice after
dropping the page cache ('read_cold', 'read_cold_again': the disk's own
sequential read speed; twice because a virtual machine's host may cache its
disk, so the second can be faster). Dropping writes
/proc/sys/vm/drop_caches, which needs root and empties the whole machine's
page cache (set COURIER_BENCH_KEEP_PAGE_CACHE to never do it; the tests
do); when it is refused, a note says why, the cold reads are not measured
and the run still passes.
";

pub const RECOVERY: &str = "\
bench recovery: how fast a durable broker starts on a log of N messages

usage: bench recovery [--messages N] [--size BYTES] [--batch K]
                      [--fsync MODE] [common options]

  --messages N      messages to log, 1 to 10^12 (default 1000000)
  --size BYTES      payload size, 20 to 64MiB (default 128)
  --batch K         messages per publish frame, 1 to 65536 (default 100)
  --fsync MODE      the filling broker's sync mode (default never: the fill
                    is not what is measured)

Always in process: a broker with a fresh temporary data directory is
filled (one topic, one subscriber that acknowledges nothing, so every
message is kept), stopped, and started again on the same directory; the
time of that start (log replay and rebuilt state) is reported with the
log's bytes and records. Every message must come back.
";

pub const BACKLOG: &str = "\
bench backlog: a subscriber far behind the memory cache catches up from disk

usage: bench backlog [--cache-bytes N] [--messages N] [--size BYTES]
                     [--batch K] [--duration SECS] [--fsync MODE]
                     [common options]

  --cache-bytes N   the broker's --cache-bytes, 64KiB to 1TiB (default 16MiB)
  --messages N      the backlog, in messages (default: 10.5 caches' worth)
  --size BYTES      payload size (default 1024)
  --batch K         messages per publish frame when filling (default 100)
  --duration SECS   how long the probe runs alone first (default 3)
  --fsync MODE      the broker's sync mode (default always)

Always in process, on a fresh temporary data directory: the broker is
filled with the backlog (one topic, one subscriber that has read nothing),
so all but the newest cache's worth is on disk only. A probe (one
acknowledged publish and the pull of it, on a topic of its own, every
millisecond) runs alone, then beside the catch-up (pipelined pulls that
acknowledge as they go) until the backlog is read. Reported: the catch-up's
msgs/s and MB/s, the probe's latency alone and beside it, and how much the
catch-up raised the probe's p99 (target: at most 2 ms). Every backlog
message must arrive once, in order, intact.
";

pub const FAIRNESS: &str = "\
bench fairness: how much abusive clients slow down a well-behaved one

usage: bench fairness [--attack KIND] [--attackers N] [--interval-ms MS]
                      [--baseline-secs SECS] [--topics T] [--sessions S]
                      [common options]

  --attack KIND       the abuse (default flood):
                        flood   pipelined PUBLISH to a topic nobody subscribes
                                to (even attackers) and pipelined STATS (odd)
                        pulls   a session subscribed to T topics pipelining
                                empty all-topics pulls that do not wait
                        fanout  pipelined PUBLISH to a topic with S detached
                                subscriber sessions
                        churn   connect, register a subscriber, subscribe to 3
                                topics, disconnect, again and again
  --attackers N       attacking connections, one thread each (default 1)
  --interval-ms MS    the probe's pace: one round trip every MS (default 2)
  --baseline-secs S   the probe alone first, this long (default 2)
  --duration SECS     then the probe beside the attack, this long (default 5)
  --topics T          pulls: topics the attacking session subscribes to
                      (default 10000)
  --sessions S        fanout: detached sessions on the attacked topic
                      (default 5000)

The probe is a publisher and a subscriber on a topic of their own: one
acknowledged publish, then a pull of that message, timed together. The
attackers build their state (topics, subscriptions, sessions) before the
baseline, so the two phases differ by the attack traffic alone. The report
shows the probe's latency in both phases; attackers' refusals are counted,
not failures, but the probe must get every message in order and no error.
";
