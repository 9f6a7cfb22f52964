//! The dependency graph of committed transactions, and the cycle searches over it.
//!
//! Owns the graph's shape (nodes are transaction indexes, every edge carries a set of
//! [`Kinds`]), the real-time edges (a sweep that emits only a transitive reduction), strongly
//! connected components (Tarjan, iterative so that a long chain cannot overflow the stack) and
//! the search for short cycles inside one component with a restricted set of edge kinds.
//! Must not: know what a list, a key or an append is; the list-append analysis in the parent
//! module decides which edges exist and says what they mean.

use std::collections::{HashMap, VecDeque};

use crate::history::{RETURN_NEVER, Time};

/// A set of edge kinds, as bits.
pub type Kinds = u8;
/// Write-write: the source's append directly precedes the target's in a key's order.
pub const WW: Kinds = 1;
/// Write-read: the target read a list ending in the source's append.
pub const WR: Kinds = 2;
/// Read-write (anti-dependency): the source read a list the target's append later extended.
pub const RW: Kinds = 4;
/// Real time: the source completed before the target began.
pub const RT: Kinds = 8;
/// Every kind.
pub const ALL_KINDS: Kinds = WW | WR | RW | RT;

/// A step of a found cycle is attributed the first kind of this list that its edge has and the
/// search allowed: the weakest explanation first, so that a cycle is called `-realtime` only
/// when a real-time edge is the only way round.
const KIND_PREFERENCE: [Kinds; 4] = [WW, WR, RW, RT];

/// Edges by source node; each (source, target) pair appears once, with all its kinds.
#[derive(Debug, Default)]
pub struct Graph {
    out: Vec<Vec<(usize, Kinds)>>,
}

/// One step of a cycle: from `node` to the next node of the cycle (the first, after the last),
/// over an edge of kind `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The step's source.
    pub node: usize,
    /// The single kind the step is attributed.
    pub kind: Kinds,
}

impl Graph {
    /// A graph of `nodes` nodes and `edges` (source, target, kinds); repeated pairs merge their
    /// kinds. Self-edges are dropped: a transaction never depends on itself.
    ///
    /// # Panics
    /// When an edge names a node `>= nodes`.
    #[must_use]
    pub fn new(nodes: usize, mut edges: Vec<(usize, usize, Kinds)>) -> Graph {
        edges.sort_unstable();
        let mut out: Vec<Vec<(usize, Kinds)>> = vec![Vec::new(); nodes];
        for (from, to, kinds) in edges {
            assert!(from < nodes, "edge from {from}, but only {nodes} nodes");
            assert!(to < nodes, "edge to {to}, but only {nodes} nodes");
            if from == to {
                continue;
            }
            match out[from].last_mut() {
                Some((last, merged)) if *last == to => *merged |= kinds,
                _ => out[from].push((to, kinds)),
            }
        }
        Graph { out }
    }

    /// The kinds of the edge `from -> to`, or 0 when there is none.
    #[must_use]
    pub fn kinds(&self, from: usize, to: usize) -> Kinds {
        // Targets are sorted (edges were sorted before insertion).
        let edges = &self.out[from];
        edges
            .binary_search_by_key(&to, |&(target, _)| target)
            .map_or(0, |at| edges[at].1)
    }

    /// Edges in all, and by kind (ww, wr, rw, rt); a pair with two kinds counts once in all.
    #[must_use]
    pub fn edge_counts(&self) -> (usize, [usize; 4]) {
        let mut by_kind = [0; 4];
        let mut all = 0;
        for edges in &self.out {
            for &(_, kinds) in edges {
                all += 1;
                for (count, kind) in by_kind.iter_mut().zip([WW, WR, RW, RT]) {
                    *count += usize::from(kinds & kind != 0);
                }
            }
        }
        (all, by_kind)
    }

    /// The strongly connected components of more than one node, over every edge.
    #[must_use]
    pub fn cyclic_components(&self) -> Vec<Vec<usize>> {
        let successors: Vec<Vec<usize>> = self
            .out
            .iter()
            .map(|edges| edges.iter().map(|&(to, _)| to).collect())
            .collect();
        strongly_connected(&successors)
            .into_iter()
            .filter(|component| component.len() > 1)
            .collect()
    }

    /// A short cycle inside `members` that uses only edges of the `allowed` kinds, if there is
    /// one: the first multi-node component of that restricted subgraph, and the shortest cycle
    /// through its first node (breadth-first).
    #[must_use]
    pub fn find_cycle(&self, members: &[usize], allowed: Kinds) -> Option<Vec<Step>> {
        let local = Local::new(self, members, allowed);
        let component = strongly_connected(&local.successors)
            .into_iter()
            .find(|component| component.len() > 1)?;
        let inside = local.mask(&component);
        let start = component[0];
        let path = local.shortest_path(start, &inside, |node| {
            local.successors[node].contains(&start)
        })?;
        Some(self.attribute(&local.to_global(&path), &vec![allowed; path.len()]))
    }

    /// A cycle inside `members` made of exactly one read-write edge and otherwise only edges of
    /// the `base` kinds, if one is found. An rw edge `a -> b` closes such a cycle when `b` reaches
    /// `a` over `base` edges: certainly so when both lie in one component of the `base`
    /// subgraph, which is tried first; otherwise at most `attempts` other rw edges are tried with
    /// a breadth-first search each, which bounds the cost on a huge component.
    #[must_use]
    pub fn find_single_rw_cycle(
        &self,
        members: &[usize],
        base: Kinds,
        attempts: usize,
    ) -> Option<Vec<Step>> {
        let local = Local::new(self, members, base);
        let mut component_of = vec![usize::MAX; members.len()];
        for (id, component) in strongly_connected(&local.successors)
            .into_iter()
            .enumerate()
        {
            for node in component {
                component_of[node] = id;
            }
        }
        let mut rw_edges: Vec<(usize, usize)> = Vec::new();
        for (from, &global) in members.iter().enumerate() {
            for &(to, kinds) in &self.out[global] {
                if kinds & RW != 0
                    && let Some(&to) = local.index.get(&to)
                {
                    rw_edges.push((from, to));
                }
            }
        }
        // Same-component edges first: each certainly closes a cycle.
        rw_edges.sort_by_key(|&(from, to)| component_of[from] != component_of[to]);
        let everywhere = vec![true; members.len()];
        for &(from, to) in rw_edges.iter().take(attempts) {
            let Some(path) = local.shortest_path(to, &everywhere, |node| node == from) else {
                continue;
            };
            // The cycle: from -(rw)-> to -> ... -> from.
            let mut cycle = vec![from];
            cycle.extend(&path[..path.len() - 1]);
            let mut allowed = vec![base; cycle.len()];
            allowed[0] = RW;
            return Some(self.attribute(&local.to_global(&cycle), &allowed));
        }
        None
    }

    /// The steps of the cycle through `nodes` (closing back to the first), each attributed the
    /// weakest kind its edge has among those `allowed` for it.
    fn attribute(&self, nodes: &[usize], allowed: &[Kinds]) -> Vec<Step> {
        nodes
            .iter()
            .zip(allowed)
            .enumerate()
            .map(|(at, (&node, &allowed))| {
                let next = nodes[(at + 1) % nodes.len()];
                let kinds = self.kinds(node, next) & allowed;
                let kind = KIND_PREFERENCE
                    .into_iter()
                    .find(|&kind| kinds & kind != 0)
                    .expect("a found cycle follows existing edges of allowed kinds");
                Step { node, kind }
            })
            .collect()
    }
}

/// The subgraph induced by some members and some kinds, renumbered from 0.
struct Local<'a> {
    members: &'a [usize],
    index: HashMap<usize, usize>,
    successors: Vec<Vec<usize>>,
}

impl<'a> Local<'a> {
    fn new(graph: &Graph, members: &'a [usize], allowed: Kinds) -> Local<'a> {
        let index: HashMap<usize, usize> = members
            .iter()
            .enumerate()
            .map(|(local, &global)| (global, local))
            .collect();
        let successors = members
            .iter()
            .map(|&global| {
                graph.out[global]
                    .iter()
                    .filter(|&&(_, kinds)| kinds & allowed != 0)
                    .filter_map(|(to, _)| index.get(to).copied())
                    .collect()
            })
            .collect();
        Local {
            members,
            index,
            successors,
        }
    }

    fn mask(&self, nodes: &[usize]) -> Vec<bool> {
        let mut inside = vec![false; self.members.len()];
        for &node in nodes {
            inside[node] = true;
        }
        inside
    }

    fn to_global(&self, nodes: &[usize]) -> Vec<usize> {
        nodes.iter().map(|&node| self.members[node]).collect()
    }

    /// The shortest path from `start` through nodes `inside` to the first node that satisfies
    /// `is_goal`, both ends included.
    fn shortest_path(
        &self,
        start: usize,
        inside: &[bool],
        is_goal: impl Fn(usize) -> bool,
    ) -> Option<Vec<usize>> {
        let mut parent = vec![usize::MAX; self.successors.len()];
        parent[start] = start;
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            if is_goal(node) {
                let mut path = vec![node];
                let mut at = node;
                while at != start {
                    at = parent[at];
                    path.push(at);
                }
                path.reverse();
                return Some(path);
            }
            for &next in &self.successors[node] {
                if inside[next] && parent[next] == usize::MAX {
                    parent[next] = node;
                    queue.push_back(next);
                }
            }
        }
        None
    }
}

/// Tarjan's strongly connected components of the graph given by `successors`, iteratively.
/// Every node is in exactly one component.
#[must_use]
pub fn strongly_connected(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let nodes = successors.len();
    let mut order = vec![UNVISITED; nodes];
    let mut low = vec![0; nodes];
    let mut on_stack = vec![false; nodes];
    let mut stack: Vec<usize> = Vec::new();
    // (node, index of its next successor to look at): the recursion, made explicit.
    let mut calls: Vec<(usize, usize)> = Vec::new();
    let mut next_order = 0;
    let mut components = Vec::new();
    for root in 0..nodes {
        if order[root] != UNVISITED {
            continue;
        }
        order[root] = next_order;
        low[root] = next_order;
        next_order += 1;
        stack.push(root);
        on_stack[root] = true;
        calls.push((root, 0));
        while let Some((node, next)) = calls.last_mut() {
            let node = *node;
            if let Some(&successor) = successors[node].get(*next) {
                *next += 1;
                if order[successor] == UNVISITED {
                    order[successor] = next_order;
                    low[successor] = next_order;
                    next_order += 1;
                    stack.push(successor);
                    on_stack[successor] = true;
                    calls.push((successor, 0));
                } else if on_stack[successor] {
                    low[node] = low[node].min(order[successor]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(parent, _)) = calls.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == order[node] {
                let mut component = Vec::new();
                loop {
                    let member = stack.pop().expect("a component's nodes are on the stack");
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// Real-time edges among operations given as (node, call, return) (return [`RETURN_NEVER`] for
/// an operation that never completed): `a -> b` whenever `a` returned strictly before `b` was
/// called (intervals are closed), but only a transitive reduction of them.
///
/// The sweep keeps the frontier: completed operations that no completed operation follows. At a
/// call, every frontier member precedes the caller, and every other completed operation precedes
/// some frontier member, so edges from the frontier suffice. At a return, the operation joins
/// the frontier and the members it followed leave it. Frontier members overlap pairwise, so they
/// were all open at one instant: the frontier is never larger than the concurrency, and the sweep
/// emits at most that many edges per operation.
#[must_use]
pub fn realtime_edges(operations: &[(usize, Time, Time)]) -> Vec<(usize, usize, Kinds)> {
    // Calls sort before returns at the same instant: equal times are concurrent.
    const CALL: u8 = 0;
    const RETURN: u8 = 1;
    let mut events: Vec<(Time, u8, usize)> = Vec::with_capacity(2 * operations.len());
    for (slot, &(_, call, ret)) in operations.iter().enumerate() {
        events.push((call, CALL, slot));
        if ret != RETURN_NEVER {
            events.push((ret, RETURN, slot));
        }
    }
    events.sort_unstable();
    let mut frontier: Vec<usize> = Vec::new();
    let mut predecessors: Vec<Vec<usize>> = vec![Vec::new(); operations.len()];
    let mut edges = Vec::new();
    for (_, event, slot) in events {
        if event == CALL {
            for &before in &frontier {
                edges.push((operations[before].0, operations[slot].0, RT));
            }
            predecessors[slot].clone_from(&frontier);
        } else {
            let followed = std::mem::take(&mut predecessors[slot]);
            frontier.retain(|member| !followed.contains(member));
            frontier.push(slot);
        }
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_of_a_small_graph() {
        // 0 -> 1 -> 2 -> 0, 2 -> 3, 3 -> 4 -> 3, 5 alone.
        let successors = vec![vec![1], vec![2], vec![0, 3], vec![4], vec![3], vec![]];
        let mut components: Vec<Vec<usize>> = strongly_connected(&successors)
            .into_iter()
            .map(|mut component| {
                component.sort_unstable();
                component
            })
            .collect();
        components.sort();
        assert_eq!(components, vec![vec![0, 1, 2], vec![3, 4], vec![5]]);
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let nodes = 200_000;
        let mut successors: Vec<Vec<usize>> = (0..nodes).map(|node| vec![node + 1]).collect();
        successors[nodes - 1] = vec![0];
        let components = strongly_connected(&successors);
        assert_eq!(components.len(), 1);
        assert_eq!(components[0].len(), nodes);
    }

    #[test]
    fn realtime_edges_are_a_reduction_with_the_same_closure() {
        // a [0,1], b [2,3], c [2,5], d [4,6], e [7, never], f [5,8] (c and f touch at 5).
        let operations = [
            (10, 0, 1),
            (11, 2, 3),
            (12, 2, 5),
            (13, 4, 6),
            (14, 7, RETURN_NEVER),
            (15, 5, 8),
        ];
        let mut edges = realtime_edges(&operations);
        edges.sort_unstable();
        // a precedes b and c; b precedes d and f; d precedes e; c precedes e; f precedes nothing
        // that starts after 8. Not emitted: a -> d (via b), c -> f (equal times are concurrent).
        assert_eq!(
            edges,
            vec![
                (10, 11, RT),
                (10, 12, RT),
                (11, 13, RT),
                (11, 15, RT),
                (12, 14, RT),
                (13, 14, RT),
            ]
        );
    }

    #[test]
    fn cycles_respect_allowed_kinds_and_are_attributed_weakest_first() {
        // 0 -(ww)-> 1 -(wr|rt)-> 2 -(rw)-> 0, and 2 -(rt)-> 0.
        let graph = Graph::new(3, vec![(0, 1, WW), (1, 2, WR | RT), (2, 0, RW), (2, 0, RT)]);
        let members = [0, 1, 2];
        assert_eq!(graph.find_cycle(&members, WW | WR), None);
        let cycle = graph.find_cycle(&members, WW | WR | RT).unwrap();
        // The step 2 -> 0 has rw and rt; only rt is allowed here. The rotation depends on
        // where the search starts.
        let mut kinds: Vec<Kinds> = cycle.iter().map(|step| step.kind).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, vec![WW, WR, RT]);
        let single = graph.find_single_rw_cycle(&members, WW | WR, 4).unwrap();
        assert_eq!(single[0], Step { node: 2, kind: RW });
        assert_eq!(single.len(), 3);
        assert_eq!(graph.cyclic_components().len(), 1);
    }
}
