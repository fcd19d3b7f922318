//! The subscription index: table -> event -> filter values -> the channel bindings that want such a
//! change. A change is matched by a few hash lookups (equality and `in` filters) plus the bindings
//! without a filter and the few with range filters, never by a scan of every subscriber.

use std::collections::HashMap;
use std::sync::Arc;

use herald_core::SessionHandle;

use crate::change::{Change, Kind};
use crate::filter::Filter;

/// A channel subscription (one joined topic on one connection).
pub type ChanId = u64;
type EntryId = u64;

/// The database identity a subscriber's rows are checked under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// The JWT `role`, used as the PostgreSQL role.
    pub role: Arc<str>,
    /// The JWT claims as JSON text, for `request.jwt.claims`.
    pub claims: Arc<str>,
    /// The JWT `sub`, if any.
    pub sub: Option<Arc<str>>,
}

/// A small number naming one distinct (role, claims) group while it has subscribers.
pub type GroupId = u64;

/// A subscribed channel.
#[derive(Debug)]
pub struct Chan {
    /// The connection.
    pub session: Arc<SessionHandle>,
    /// Full topic (`realtime:<name>`), shared by every channel of the same topic.
    pub topic: Arc<str>,
    /// The join reference (for `system` messages).
    pub join_ref: Option<Arc<str>>,
    /// Role and claims.
    pub group: Arc<Group>,
    /// The group's number: equal claims, equal number.
    pub group_id: GroupId,
    entries: Vec<(u32, Kind, EntryId)>,
    /// The columns each binding selected, by (table, binding id): only bindings with `select`.
    selects: Vec<(u32, u32, Arc<[bool]>)>,
}

impl Chan {
    /// The columns a change of `table` matched by the bindings `ids` shows: `None` (every column)
    /// unless each of them selected columns, then the columns any of them selected.
    pub fn selection(&self, table: u32, ids: &[u32]) -> Option<Arc<[bool]>> {
        if self.selects.is_empty() {
            return None;
        }
        let mask = |id: &u32| {
            self.selects
                .iter()
                .find(|(t, b, _)| *t == table && b == id)
                .map(|(_, _, m)| m)
        };
        if let [id] = ids {
            // One binding matched (the common case): its own mask, shared.
            return mask(id).cloned();
        }
        let mut union: Option<Vec<bool>> = None;
        for id in ids {
            let mask = mask(id)?;
            match &mut union {
                None => union = Some(mask.to_vec()),
                Some(u) => u.iter_mut().zip(mask.iter()).for_each(|(a, b)| *a |= *b),
            }
        }
        union.map(Arc::from)
    }
}

#[derive(Debug)]
struct Entry {
    chan: ChanId,
    binding: u32,
    filter: Option<Filter>,
}

#[derive(Debug, Default)]
struct EventIndex {
    all: Vec<EntryId>,
    eq: HashMap<(usize, String), Vec<EntryId>>,
    /// Columns with equality filters, with how many entries use each.
    eq_columns: Vec<(usize, usize)>,
    /// Entries whose filter has no equality to look up, by distinct filter (its canonical text):
    /// a change evaluates each distinct filter once, however many entries share it.
    other: HashMap<String, (Filter, Vec<EntryId>)>,
}

/// One binding of a channel, resolved to one table.
#[derive(Debug, Clone)]
pub struct BindingSpec {
    /// The table's oid.
    pub table: u32,
    /// Events wanted (`*` gives all three).
    pub kinds: Vec<Kind>,
    /// The binding id the client knows.
    pub binding: u32,
    /// Row filter.
    pub filter: Option<Filter>,
    /// The columns `select` keeps (by the table's column order); `None`: every column.
    pub select: Option<Arc<[bool]>>,
}

/// Every subscription of this node.
#[derive(Debug, Default)]
pub struct Index {
    tables: HashMap<u32, [EventIndex; 3]>,
    entries: HashMap<EntryId, Entry>,
    chans: HashMap<ChanId, Chan>,
    by_topic: HashMap<(u64, Arc<str>), ChanId>,
    /// Distinct groups with their numbers and how many channels use them.
    groups: HashMap<Arc<Group>, (GroupId, usize)>,
    /// Distinct topics and how many channels use them (so equal topics share one `Arc`).
    topics: HashMap<Arc<str>, usize>,
    next: u64,
}

/// The matches of one change: channels with their matching binding ids.
pub type Hits = Vec<(ChanId, Vec<u32>)>;

impl Index {
    /// Adds a channel with its bindings; replaces an earlier subscription of the same topic on the
    /// same connection.
    pub fn add(
        &mut self,
        session: Arc<SessionHandle>,
        topic: Arc<str>,
        join_ref: Option<Arc<str>>,
        group: Arc<Group>,
        bindings: Vec<BindingSpec>,
    ) -> ChanId {
        self.remove(session.id, &topic);
        self.next += 1;
        let chan_id = self.next;
        let mut entries = Vec::new();
        let selects = bindings
            .iter()
            .filter_map(|b| Some((b.table, b.binding, b.select.clone()?)))
            .collect();
        for spec in bindings {
            for &kind in &spec.kinds {
                self.next += 1;
                let entry_id = self.next;
                let ev = &mut self.tables.entry(spec.table).or_default()[kind.index()];
                match spec.filter.as_ref().map(Filter::index) {
                    None => ev.all.push(entry_id),
                    Some(Some((column, keys))) => {
                        for key in keys {
                            ev.eq.entry((column, key)).or_default().push(entry_id);
                        }
                        match ev.eq_columns.iter_mut().find(|(c, _)| *c == column) {
                            Some((_, n)) => *n += 1,
                            None => ev.eq_columns.push((column, 1)),
                        }
                    }
                    Some(None) => {
                        if let Some(f) = &spec.filter {
                            ev.other
                                .entry(f.key().to_owned())
                                .or_insert_with(|| (f.clone(), Vec::new()))
                                .1
                                .push(entry_id);
                        }
                    }
                }
                self.entries.insert(
                    entry_id,
                    Entry {
                        chan: chan_id,
                        binding: spec.binding,
                        filter: spec.filter.clone(),
                    },
                );
                entries.push((spec.table, kind, entry_id));
            }
        }
        let topic = self.intern_topic(topic);
        let (group, group_id) = self.intern_group(group);
        self.by_topic.insert((session.id, topic.clone()), chan_id);
        self.chans.insert(
            chan_id,
            Chan {
                session,
                topic,
                join_ref,
                group,
                group_id,
                entries,
                selects,
            },
        );
        chan_id
    }

    fn intern_topic(&mut self, topic: Arc<str>) -> Arc<str> {
        if let Some((shared, n)) = self
            .topics
            .get_key_value(&topic)
            .map(|(k, n)| (k.clone(), *n))
        {
            self.topics.insert(shared.clone(), n + 1);
            return shared;
        }
        self.topics.insert(topic.clone(), 1);
        topic
    }

    fn release_topic(&mut self, topic: &Arc<str>) {
        if let Some(n) = self.topics.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                self.topics.remove(topic);
            }
        }
    }

    fn intern_group(&mut self, group: Arc<Group>) -> (Arc<Group>, GroupId) {
        if let Some((shared, (id, n))) = self
            .groups
            .get_key_value(&group)
            .map(|(k, v)| (k.clone(), *v))
        {
            self.groups.insert(shared.clone(), (id, n + 1));
            return (shared, id);
        }
        self.next += 1;
        let id = self.next;
        self.groups.insert(group.clone(), (id, 1));
        (group, id)
    }

    fn release_group(&mut self, group: &Arc<Group>) {
        if let Some((_, n)) = self.groups.get_mut(group) {
            *n -= 1;
            if *n == 0 {
                self.groups.remove(group);
            }
        }
    }

    /// Removes a connection's subscription of a topic.
    pub fn remove(&mut self, session: u64, topic: &Arc<str>) -> bool {
        let Some(chan_id) = self.by_topic.remove(&(session, topic.clone())) else {
            return false;
        };
        let Some(chan) = self.chans.remove(&chan_id) else {
            return false;
        };
        self.release_topic(&chan.topic);
        self.release_group(&chan.group);
        for (table, kind, entry_id) in chan.entries {
            let Some(entry) = self.entries.remove(&entry_id) else {
                continue;
            };
            let Some(events) = self.tables.get_mut(&table) else {
                continue;
            };
            let ev = &mut events[kind.index()];
            let drop_from = |v: &mut Vec<EntryId>| v.retain(|e| *e != entry_id);
            match entry.filter.as_ref().map(Filter::index) {
                None => drop_from(&mut ev.all),
                Some(Some((column, keys))) => {
                    for key in keys {
                        let k = (column, key);
                        if let Some(list) = ev.eq.get_mut(&k) {
                            drop_from(list);
                            if list.is_empty() {
                                ev.eq.remove(&k);
                            }
                        }
                    }
                    if let Some(pos) = ev.eq_columns.iter().position(|(c, _)| *c == column) {
                        ev.eq_columns[pos].1 -= 1;
                        if ev.eq_columns[pos].1 == 0 {
                            ev.eq_columns.swap_remove(pos);
                        }
                    }
                }
                Some(None) => {
                    let key = entry.filter.as_ref().map(Filter::key).unwrap_or_default();
                    if let Some((_, list)) = ev.other.get_mut(key) {
                        drop_from(list);
                        if list.is_empty() {
                            ev.other.remove(key);
                        }
                    }
                }
            }
            if events
                .iter()
                .all(|e| e.all.is_empty() && e.eq.is_empty() && e.other.is_empty())
            {
                self.tables.remove(&table);
            }
        }
        true
    }

    /// Removes every subscription of closed connections.
    pub fn remove_closed(&mut self) -> usize {
        let closed: Vec<(u64, Arc<str>)> = self
            .chans
            .values()
            .filter(|c| c.session.is_closing())
            .map(|c| (c.session.id, c.topic.clone()))
            .collect();
        for (s, t) in &closed {
            self.remove(*s, t);
        }
        closed.len()
    }

    /// A subscribed channel.
    pub fn chan(&self, id: ChanId) -> Option<&Chan> {
        self.chans.get(&id)
    }

    /// The channel of a connection's topic.
    pub fn chan_of(&self, session: u64, topic: &Arc<str>) -> Option<ChanId> {
        self.by_topic.get(&(session, topic.clone())).copied()
    }

    /// Changes the role and claims of a subscription.
    pub fn set_group(&mut self, id: ChanId, group: Arc<Group>) {
        let Some(old) = self.chans.get(&id).map(|c| c.group.clone()) else {
            return;
        };
        self.release_group(&old);
        let (group, group_id) = self.intern_group(group);
        if let Some(c) = self.chans.get_mut(&id) {
            c.group = group;
            c.group_id = group_id;
        }
    }

    /// Subscribed channels.
    pub fn len(&self) -> usize {
        self.chans.len()
    }

    /// True when nobody subscribes.
    pub fn is_empty(&self) -> bool {
        self.chans.is_empty()
    }

    /// True when some subscription watches this table.
    pub fn watches(&self, table: u32) -> bool {
        self.tables.contains_key(&table)
    }

    /// The channels (and their binding ids) a change matches; `only` restricts it to one channel.
    pub fn lookup(&self, change: &Change, only: Option<ChanId>) -> Hits {
        let Some(events) = self.tables.get(&change.table.oid) else {
            return Vec::new();
        };
        let ev = &events[change.kind.index()];
        let mut pairs: Vec<(ChanId, u32)> = Vec::new();
        let mut add = |entry_id: &EntryId| {
            if let Some(e) = self.entries.get(entry_id)
                && only.is_none_or(|c| c == e.chan)
            {
                pairs.push((e.chan, e.binding));
            }
        };
        ev.all.iter().for_each(&mut add);
        // One evaluation per distinct filter, whatever the number of bindings that share it.
        let mut seen: HashMap<&str, bool> = HashMap::new();
        let mut passes = |entry_id: &EntryId| {
            let Some(f) = self.entries.get(entry_id).and_then(|e| e.filter.as_ref()) else {
                return false;
            };
            *seen.entry(f.key()).or_insert_with(|| f.matches(change))
        };
        for (column, _) in &ev.eq_columns {
            if let Some(v) = change.typed(*column)
                && let Some(list) = ev.eq.get(&(*column, v.key()))
            {
                for entry_id in list {
                    // Found by its first equality; any further condition is checked here.
                    let more = self
                        .entries
                        .get(entry_id)
                        .and_then(|e| e.filter.as_ref())
                        .is_some_and(Filter::beyond_index);
                    if !more || passes(entry_id) {
                        add(entry_id);
                    }
                }
            }
        }
        for (filter, list) in ev.other.values() {
            if filter.matches(change) {
                list.iter().for_each(&mut add);
            }
        }
        // One entry per channel with its distinct binding ids, in channel order.
        pairs.sort_unstable();
        pairs.dedup();
        let mut hits: Hits = Vec::new();
        for (chan, binding) in pairs {
            match hits.last_mut() {
                Some((c, ids)) if *c == chan => ids.push(binding),
                _ => hits.push((chan, vec![binding])),
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, Table};
    use crate::change::row_from_pairs;
    use crate::filter::{Filter, parse};
    use crate::values::ColumnType;
    use herald_protocol::Vsn;

    fn table() -> Arc<Table> {
        let col = |name: &str, ty: &str, pk: bool| Column {
            name: Arc::from(name),
            type_name: Arc::from(ty),
            sql_type: Arc::from(ty),
            ty: ColumnType::new(ty, None),
            primary_key: pk,
        };
        Arc::new(Table::new(
            42,
            Arc::from("public"),
            Arc::from("todos"),
            vec![col("id", "int8", true), col("owner", "text", false)],
            false,
        ))
    }

    fn change(t: &Arc<Table>, kind: Kind, id: &str, owner: &str) -> Change {
        let row = row_from_pairs(t, [("id", Some(id)), ("owner", Some(owner))].into_iter());
        Change {
            table: t.clone(),
            kind,
            new: (kind != Kind::Delete).then(|| row.clone()),
            old: (kind == Kind::Delete).then_some(row),
            commit_timestamp: Arc::from("2026-01-01T00:00:00.000Z"),
            unchanged_toast: Vec::new(),
        }
    }

    fn group() -> Arc<Group> {
        Arc::new(Group {
            role: Arc::from("authenticated"),
            claims: Arc::from("{}"),
            sub: None,
        })
    }

    fn spec(t: &Table, kinds: &[Kind], binding: u32, filter: Option<&str>) -> BindingSpec {
        BindingSpec {
            table: t.oid,
            kinds: kinds.to_vec(),
            binding,
            filter: filter.map(|f| Filter::bind(&parse(f).unwrap(), t).unwrap()),
            select: None,
        }
    }

    #[test]
    fn a_channel_shows_the_columns_its_matching_bindings_selected() {
        let t = table();
        let mut index = Index::default();
        let selecting = |binding, mask: &[bool]| BindingSpec {
            select: Some(Arc::from(mask)),
            ..spec(&t, &[Kind::Insert], binding, None)
        };
        let c = index.add(
            SessionHandle::new(1, Vsn::V2, 16),
            Arc::from("realtime:a"),
            None,
            group(),
            vec![
                selecting(1, &[true, false]),
                selecting(2, &[false, true]),
                spec(&t, &[Kind::Insert], 3, None),
            ],
        );
        let chan = index.chan(c).unwrap();
        assert_eq!(
            chan.selection(t.oid, &[1]).as_deref(),
            Some(&[true, false][..])
        );
        assert_eq!(
            chan.selection(t.oid, &[1, 2]).as_deref(),
            Some(&[true, true][..])
        );
        // A binding without `select` shows every column; so does another table's.
        assert_eq!(chan.selection(t.oid, &[1, 3]), None);
        assert_eq!(chan.selection(t.oid + 1, &[1]), None);
    }

    #[test]
    fn matches_by_event_and_filter_and_groups_ids_per_channel() {
        let t = table();
        let mut index = Index::default();
        let s1 = SessionHandle::new(1, Vsn::V2, 16);
        let s2 = SessionHandle::new(2, Vsn::V2, 16);
        let all = [Kind::Insert, Kind::Update, Kind::Delete];
        let c1 = index.add(
            s1.clone(),
            Arc::from("realtime:a"),
            None,
            group(),
            vec![
                spec(&t, &all, 10, None),
                spec(&t, &[Kind::Insert], 11, Some("id=in.(1,3)")),
            ],
        );
        let c2 = index.add(
            s2.clone(),
            Arc::from("realtime:b"),
            None,
            group(),
            vec![spec(&t, &[Kind::Insert], 20, Some("id=gt.2"))],
        );
        assert_eq!(
            index.lookup(&change(&t, Kind::Insert, "1", "x"), None),
            vec![(c1, vec![10, 11])]
        );
        let mut hits = index.lookup(&change(&t, Kind::Insert, "3", "x"), None);
        hits.sort();
        assert_eq!(hits, vec![(c1, vec![10, 11]), (c2, vec![20])]);
        assert_eq!(
            index.lookup(&change(&t, Kind::Delete, "3", "x"), None),
            vec![(c1, vec![10])]
        );
        assert_eq!(
            index.lookup(&change(&t, Kind::Insert, "3", "x"), Some(c2)),
            vec![(c2, vec![20])]
        );
        assert!(index.remove(1, &Arc::from("realtime:a")));
        assert_eq!(
            index.lookup(&change(&t, Kind::Insert, "1", "x"), None),
            Vec::<(ChanId, Vec<u32>)>::new()
        );
        s2.close_with(1000, "bye");
        assert_eq!(index.remove_closed(), 1);
        assert!(index.is_empty() && !index.watches(t.oid));
    }

    #[test]
    fn a_change_is_checked_once_per_distinct_filter() {
        let t = table();
        let mut index = Index::default();
        // 1,000 subscribers over 10 distinct pattern filters (none can use the equality index),
        // and 100 whose equality filter has a further condition.
        let mut sessions = Vec::new();
        for i in 0..1_000u64 {
            let s = SessionHandle::new(i, Vsn::V2, 16);
            let filter = format!("owner=like.user{}%", i % 10);
            index.add(
                s.clone(),
                Arc::from(format!("realtime:p{i}")),
                None,
                group(),
                vec![spec(&t, &[Kind::Insert], 1, Some(&filter))],
            );
            sessions.push(s);
        }
        for i in 0..100u64 {
            let s = SessionHandle::new(5_000 + i, Vsn::V2, 16);
            index.add(
                s.clone(),
                Arc::from(format!("realtime:q{i}")),
                None,
                group(),
                vec![spec(
                    &t,
                    &[Kind::Insert],
                    2,
                    Some("id=eq.7,owner=neq.nobody"),
                )],
            );
            sessions.push(s);
        }
        crate::filter::EVALUATED.with(|n| n.set(0));
        let hits = index.lookup(&change(&t, Kind::Insert, "7", "user3-x"), None);
        // The 100 subscribers of `user3%` and the 100 of the equality filter.
        assert_eq!(hits.len(), 200);
        assert_eq!(crate::filter::EVALUATED.with(std::cell::Cell::get), 11);
    }
}
