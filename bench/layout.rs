//! Who publishes to and who subscribes to which topic.
//!
//! Publishers and subscribers are spread over the topics the same way: with
//! at least as many clients as topics, client `i` takes topic `i % topics`
//! (so every topic has clients and some have several); with fewer, client
//! `i` takes every topic `t` with `t % clients == i` and visits them in turn.
//! Every topic thus has a publisher and, when there are subscribers, a
//! subscriber, and the counts below follow from the rule without a table.
//!
//! The rule also gives each publisher a dense "slot" among its topic's
//! publishers, so a subscriber can keep its per-publisher state in a flat
//! vector instead of a map.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub publishers: usize,
    pub subscribers: usize,
    pub topics: usize,
}

impl Layout {
    pub fn publisher_topics(&self, publisher: usize) -> Vec<usize> {
        spread(publisher, self.publishers, self.topics)
    }

    pub fn subscriber_topics(&self, subscriber: usize) -> Vec<usize> {
        spread(subscriber, self.subscribers, self.topics)
    }

    pub fn publishers_of(&self, topic: usize) -> usize {
        members(topic, self.publishers, self.topics)
    }

    pub fn subscribers_of(&self, topic: usize) -> usize {
        members(topic, self.subscribers, self.topics)
    }

    pub fn publishes_to(&self, publisher: usize, topic: usize) -> bool {
        takes(publisher, self.publishers, topic, self.topics)
    }

    /// The most publishers any one topic has.
    pub fn slots(&self) -> usize {
        if self.publishers >= self.topics {
            self.publishers.div_ceil(self.topics.max(1))
        } else {
            1
        }
    }

    /// `publisher`'s place among its topic's publishers, below [`slots`].
    ///
    /// [`slots`]: Layout::slots
    pub fn slot(&self, publisher: usize) -> usize {
        if self.publishers >= self.topics {
            publisher / self.topics.max(1)
        } else {
            0
        }
    }
}

fn spread(client: usize, clients: usize, topics: usize) -> Vec<usize> {
    if clients >= topics {
        vec![client % topics.max(1)]
    } else {
        (client..topics).step_by(clients.max(1)).collect()
    }
}

fn takes(client: usize, clients: usize, topic: usize, topics: usize) -> bool {
    if client >= clients || topic >= topics {
        false
    } else if clients >= topics {
        client % topics == topic
    } else {
        topic % clients == client
    }
}

fn members(topic: usize, clients: usize, topics: usize) -> usize {
    if clients == 0 || topic >= topics {
        0
    } else if clients >= topics {
        clients / topics + usize::from(topic < clients % topics)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts and slots agree with the lists, whatever the shape.
    #[test]
    fn counts_and_slots_match_the_lists() {
        for publishers in 1..7 {
            for subscribers in 0..7 {
                for topics in 1..9 {
                    let layout = Layout {
                        publishers,
                        subscribers,
                        topics,
                    };
                    for topic in 0..topics {
                        let of_topic: Vec<usize> = (0..publishers)
                            .filter(|&p| layout.publisher_topics(p).contains(&topic))
                            .collect();
                        assert_eq!(of_topic.len(), layout.publishers_of(topic));
                        assert!(!of_topic.is_empty());
                        let mut slots: Vec<usize> =
                            of_topic.iter().map(|&p| layout.slot(p)).collect();
                        slots.dedup();
                        assert_eq!(slots.len(), of_topic.len(), "slots are distinct");
                        assert!(slots.iter().all(|&s| s < layout.slots()));
                        for p in 0..publishers {
                            assert_eq!(layout.publishes_to(p, topic), of_topic.contains(&p));
                        }
                        let subs = (0..subscribers)
                            .filter(|&s| layout.subscriber_topics(s).contains(&topic))
                            .count();
                        assert_eq!(subs, layout.subscribers_of(topic));
                    }
                }
            }
        }
    }
}
