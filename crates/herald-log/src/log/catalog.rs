//! The in-memory catalog: installing a topic's partitions and growing a topic.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::producer::Producers;
use crate::store::{PartRecord, TopicRecord};

use super::{Catalog, PartState, Partition, Topic};

/// Replaces `topic` in the catalog by one with the partitions `rec` lists: the existing ones
/// are kept as they are, the new ones start empty.
pub(super) fn extend_topic(cat: &mut Catalog, topic: &Arc<Topic>, rec: &TopicRecord) -> Arc<Topic> {
    let mut partitions = topic.partitions.clone();
    for (i, s) in rec.streams.iter().enumerate().skip(partitions.len()) {
        let p = Arc::new(Partition {
            stream: *s,
            topic: Arc::from(rec.name.as_str()),
            index: i as u32,
            state: Mutex::new(PartState {
                next_offset: 0,
                pending_next: 0,
                log_start: 0,
                total_bytes: 0,
                pending_total: 0,
                start_bytes: 0,
                max_ts: 0,
                tail: Vec::new(),
                producers: Producers::default(),
            }),
        });
        cat.next_stream = cat.next_stream.max(s + 1);
        cat.streams.insert(*s, Arc::clone(&p));
        partitions.push(p);
    }
    let grown = Arc::new(Topic {
        name: topic.name.clone(),
        partitions,
        config: RwLock::new(topic.config.read().clone()),
        created_ms: topic.created_ms,
    });
    cat.topics.insert(rec.name.clone(), Arc::clone(&grown));
    grown
}

pub(super) fn install_topic(
    cat: &mut Catalog,
    rec: &TopicRecord,
    state: impl Fn(u64) -> PartRecord,
) -> Arc<Topic> {
    let name: Arc<str> = Arc::from(rec.name.as_str());
    let partitions: Vec<Arc<Partition>> = rec
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let r = state(*s);
            Arc::new(Partition {
                stream: *s,
                topic: Arc::clone(&name),
                index: i as u32,
                state: Mutex::new(PartState {
                    next_offset: r.next_offset,
                    pending_next: r.next_offset,
                    log_start: r.log_start,
                    total_bytes: r.total_bytes,
                    pending_total: r.total_bytes,
                    start_bytes: r.start_bytes,
                    max_ts: r.max_ts,
                    tail: Vec::new(),
                    producers: Producers::from_snapshot(r.producers),
                }),
            })
        })
        .collect();
    let topic = Arc::new(Topic {
        name: rec.name.clone(),
        partitions: partitions.clone(),
        config: RwLock::new(rec.config.clone()),
        created_ms: rec.created_ms,
    });
    for p in partitions {
        cat.next_stream = cat.next_stream.max(p.stream + 1);
        cat.streams.insert(p.stream, p);
    }
    cat.topics.insert(rec.name.clone(), Arc::clone(&topic));
    topic
}
