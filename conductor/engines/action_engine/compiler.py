"""Compile a flow into a graph of atoms with precomputed argument bindings.

Done once per ``engines.load``: names are checked for uniqueness, each flow
pattern becomes edges between atoms (linear: one after another; unordered:
none; graph: data dependencies and links, cycles rejected), every atom's
parameters are bound to the store or to the nearest earlier atom providing
them, and every input nobody provides is reported in a single error.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

from conductor.atom import Atom
from conductor.engines.action_engine.runtime import (
    ATOM,
    CONST,
    STORE,
    AtomRuntime,
    Binding,
    Decider,
    new_uuid,
)
from conductor.exceptions import (
    DependencyCycle,
    DuplicateAtomNames,
    InvalidFlow,
    MissingDependencies,
)
from conductor.flow import Flow, Node
from conductor.patterns import graph_flow, unordered_flow
from conductor.storage import Provider

Built = tuple[list[AtomRuntime], list[AtomRuntime], dict[str, Provider]]


class Compilation:
    """A compiled flow: atoms in flow order, by name, and the final provider of each name."""

    def __init__(self, atoms: list[AtomRuntime], providers: dict[str, Provider]):
        self.atoms = atoms
        self.by_name = {rt.name: rt for rt in atoms}
        self.providers = providers


def compile_flow(flow: Flow, store: Mapping[str, Any]) -> Compilation:
    """Compile ``flow`` against the names in ``store``; raises :class:`InvalidFlow` subclasses."""
    if not isinstance(flow, Flow):
        raise TypeError(f"engines need a flow, got {flow!r}")
    _check_unique_names(flow)
    builder = _Builder(store)
    _, _, provided = builder.node(flow, {}, None)
    if builder.missing:
        listed = "; ".join(
            f"{rt.kind} {rt.name!r} needs {', '.join(map(repr, names))}"
            for rt, names in builder.missing
        )
        raise MissingDependencies(
            f"flow {flow.name!r} cannot run, inputs provided by neither the store nor an "
            f"earlier atom: {listed}",
            {rt.name: names for rt, names in builder.missing},
        )
    return Compilation(builder.atoms, provided)


def _check_unique_names(flow: Flow) -> None:
    seen: set[str] = set()
    duplicates: list[str] = []
    for atom in flow.iter_atoms():
        if atom.name in seen and atom.name not in duplicates:
            duplicates.append(atom.name)
        seen.add(atom.name)
    if duplicates:
        raise DuplicateAtomNames(
            f"flow {flow.name!r} has several atoms named {', '.join(map(repr, duplicates))}; "
            "atom names must be unique within a flow",
            duplicates,
        )


def _node_name(node: Node) -> str:
    return node.name


class _Builder:
    def __init__(self, store: Mapping[str, Any]):
        self.store = store
        self.atoms: list[AtomRuntime] = []
        self.missing: list[tuple[AtomRuntime, list[str]]] = []
        self._edges: set[tuple[int, int]] = set()
        self._needs: dict[int, frozenset[str]] = {}
        self._gives: dict[int, frozenset[str]] = {}

    # -- graph -------------------------------------------------------------------------------

    def edge(self, u: AtomRuntime, v: AtomRuntime) -> None:
        key = (u.index, v.index)
        if key not in self._edges:
            self._edges.add(key)
            u.succs.append(v)
            v.preds.append(u)

    def edges(self, us: list[AtomRuntime], vs: list[AtomRuntime]) -> None:
        for u in us:
            for v in vs:
                self.edge(u, v)

    # -- atoms -------------------------------------------------------------------------------

    def atom(self, atom: Atom, visible: Mapping[str, Provider], scope: AtomRuntime | None) -> Built:
        rt = AtomRuntime(len(self.atoms), atom, new_uuid(), scope)
        self.atoms.append(rt)
        self.bind(rt, visible)
        if rt.provides_single:
            provided: dict[str, Provider] = {rt.provides[0]: (rt, None, 0)}
        else:
            provided = {n: (rt, n, i) for i, n in enumerate(rt.provides)}
        return [rt], [rt], provided

    def bind(self, rt: AtomRuntime, visible: Mapping[str, Provider]) -> None:
        atom = rt.atom
        spec = rt.exec_spec
        for_exec: list[Binding] = []
        every: list[Binding] = []
        parents: list[AtomRuntime] = []
        lacking: list[str] = []
        for param, name in atom.rebind.items():
            optional = atom.is_optional(param)
            provider = visible.get(name)
            binding: Binding
            if provider is not None:
                source, key, index = provider
                binding = (param, ATOM, source, name, key, index, optional)
                if source not in parents:
                    parents.append(source)  # type: ignore[arg-type]
            elif name in self.store:
                binding = (param, STORE, None, name, None, 0, optional)
            elif optional:
                continue
            else:
                lacking.append(name)
                continue
            every.append(binding)
            if spec.var_kw or param in spec.params:
                for_exec.append(binding)
        for param, value in atom.inject.items():
            binding = (param, CONST, value, param, None, 0, False)
            every.append(binding)
            if spec.var_kw or param in spec.params:
                for_exec.append(binding)
        if lacking:
            self.missing.append((rt, lacking))
        rt.exec_bindings = tuple(for_exec)
        rt.all_bindings = tuple(every)
        rt.parents = tuple(parents)

    # -- flows -------------------------------------------------------------------------------

    def node(self, node: Node, visible: Mapping[str, Provider], scope: AtomRuntime | None) -> Built:
        if isinstance(node, Atom):
            return self.atom(node, visible, scope)
        if node.retry is None:
            return self.pattern(node, visible, scope)
        (controller,), _, retry_provided = self.atom(node.retry, visible, scope)
        inner = {**visible, **retry_provided}
        start = len(self.atoms)
        sources, sinks, provided = self.pattern(node, inner, controller)
        controller.members = tuple(self.atoms[start:])
        self.edges([controller], sources)
        return [controller], sinks or [controller], {**retry_provided, **provided}

    def pattern(
        self, flow: Flow, visible: Mapping[str, Provider], scope: AtomRuntime | None
    ) -> Built:
        if isinstance(flow, graph_flow.Flow):
            return self.graph(flow, visible, scope)
        if isinstance(flow, unordered_flow.Flow):
            return self.unordered(flow, visible, scope)
        return self.linear(flow, visible, scope)

    def linear(
        self, flow: Flow, visible: Mapping[str, Provider], scope: AtomRuntime | None
    ) -> Built:
        local = dict(visible)
        provided: dict[str, Provider] = {}
        sources: list[AtomRuntime] = []
        previous: list[AtomRuntime] = []
        for child in flow:
            child_sources, child_sinks, child_provided = self.node(child, local, scope)
            if not child_sources:
                continue
            if previous:
                self.edges(previous, child_sources)
            else:
                sources = child_sources
            previous = child_sinks
            local.update(child_provided)
            provided.update(child_provided)
        return sources, previous, provided

    def unordered(
        self, flow: Flow, visible: Mapping[str, Provider], scope: AtomRuntime | None
    ) -> Built:
        sources: list[AtomRuntime] = []
        sinks: list[AtomRuntime] = []
        provided: dict[str, Provider] = {}
        for child in flow:
            child_sources, child_sinks, child_provided = self.node(child, visible, scope)
            sources.extend(child_sources)
            sinks.extend(child_sinks)
            provided.update(child_provided)
        return sources, sinks, provided

    def graph(
        self, flow: graph_flow.Flow, visible: Mapping[str, Provider], scope: AtomRuntime | None
    ) -> Built:
        children = list(flow)
        position = {id(c): j for j, c in enumerate(children)}
        giver: dict[str, int] = {}
        for j, child in enumerate(children):
            for name in self.gives(child):
                if name in giver:
                    raise InvalidFlow(
                        f"graph flow {flow.name!r}: {name!r} is provided by both "
                        f"{_node_name(children[giver[name]])!r} and {_node_name(child)!r}"
                    )
                giver[name] = j
        preds: list[set[int]] = [set() for _ in children]
        for j, child in enumerate(children):
            for name in self.needs(child):
                i = giver.get(name)
                if i is not None and i != j:
                    preds[j].add(i)
        links = flow.iter_links()
        for u, v, _ in links:
            preds[position[id(v)]].add(position[id(u)])
        order = _toposort(flow, children, preds)
        rank = {j: r for r, j in enumerate(order)}
        built: list[Built] = [([], [], {}) for _ in children]
        atoms_of: list[list[AtomRuntime]] = [[] for _ in children]
        ancestors: list[set[int]] = [set() for _ in children]
        for j in order:
            for i in preds[j]:
                ancestors[j] |= ancestors[i] | {i}
            local = dict(visible)
            for i in sorted(ancestors[j], key=rank.__getitem__):
                local.update(built[i][2])
            start = len(self.atoms)
            built[j] = self.node(children[j], local, scope)
            atoms_of[j] = self.atoms[start:]
        for j in range(len(children)):
            for i in preds[j]:
                self.edges(built[i][1], built[j][0])
        has_succ = {i for p in preds for i in p}
        sources = [rt for j in order if not preds[j] for rt in built[j][0]]
        sinks = [rt for j in order if j not in has_succ for rt in built[j][1]]
        provided: dict[str, Provider] = {}
        for j in order:
            provided.update(built[j][2])
        for u, v, function in links:
            if function is not None:
                self.decider(function, position[id(u)], position[id(v)], preds, built, atoms_of)
        return sources, sinks, provided

    def decider(
        self,
        function: Any,
        u: int,
        v: int,
        preds: list[set[int]],
        built: list[Built],
        atoms_of: list[list[AtomRuntime]],
    ) -> None:
        reach = {v}
        frontier = [v]
        while frontier:
            current = frontier.pop()
            for j, p in enumerate(preds):
                if current in p and j not in reach:
                    reach.add(j)
                    frontier.append(j)
        decider = Decider(function)
        decider.sources = tuple(atoms_of[u])
        decider.targets = tuple(rt for j in sorted(reach) for rt in atoms_of[j])
        for rt in built[v][0]:
            rt.deciders = (*rt.deciders, decider)

    # -- names a node reads and writes (for graph data dependencies) -------------------------

    def needs(self, node: Node) -> frozenset[str]:
        key = id(node)
        if key not in self._needs:
            self._needs[key] = self._compute_needs(node)
        return self._needs[key]

    def _compute_needs(self, node: Node) -> frozenset[str]:
        if isinstance(node, Atom):
            return frozenset(node.rebind.values())
        children = list(node)
        if isinstance(node, graph_flow.Flow):
            inner = set().union(*map(self.needs, children)) - set().union(
                *map(self.gives, children)
            )
        elif isinstance(node, unordered_flow.Flow):
            inner = set().union(*map(self.needs, children))
        else:
            inner, seen = set[str](), set[str]()
            for child in children:
                inner |= self.needs(child) - seen
                seen |= self.gives(child)
        if node.retry is not None:
            inner = (inner - self.gives(node.retry)) | self.needs(node.retry)
        return frozenset(inner)

    def gives(self, node: Node) -> frozenset[str]:
        key = id(node)
        if key not in self._gives:
            if isinstance(node, Atom):
                names = frozenset(node.provides)
            else:
                names = frozenset().union(*map(self.gives, node))
                if node.retry is not None:
                    names |= self.gives(node.retry)
            self._gives[key] = names
        return self._gives[key]


def _toposort(flow: Flow, children: list[Node], preds: list[set[int]]) -> list[int]:
    """Children in dependency order (ties in the order they were added); rejects cycles."""
    indegree = [len(p) for p in preds]
    succs: list[list[int]] = [[] for _ in children]
    for j, p in enumerate(preds):
        for i in p:
            succs[i].append(j)
    heap = [j for j, d in enumerate(indegree) if d == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        i = heapq.heappop(heap)
        order.append(i)
        for j in succs[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(heap, j)
    if len(order) != len(children):
        # Peel off what merely follows a cycle, so the error names the cycle itself.
        stuck = {j for j, d in enumerate(indegree) if d > 0}
        peeled = True
        while peeled:
            tails = {j for j in stuck if not any(k in stuck for k in succs[j])}
            stuck -= tails
            peeled = bool(tails)
        names = [_node_name(children[j]) for j in sorted(stuck)]
        raise DependencyCycle(
            f"graph flow {flow.name!r} has a dependency cycle between {', '.join(map(repr, names))}",
            names,
        )
    return order
