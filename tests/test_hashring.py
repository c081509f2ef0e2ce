"""conch.hashring.HashRing places every key where tooz.hashring.HashRing (tooz 9.1) does, on
generated rings, keys and changes; and refuses bad input with a clear error."""

from __future__ import annotations

import hashlib
import random
import threading

import pytest
from tooz import hashring as tooz_hashring

import conch
from conch.hashring import HashRing, Key, Node, hash_functions

ALPHABETS = ("abcxyz-_.0123456789", "äöüßéñ", "\u0634\u0628\u06a9\u0647", "日本語", "🦀🐚")


def random_name(rng: random.Random) -> Node:
    """A node name: ASCII or unicode str, its UTF-8 bytes, or bytes that are not UTF-8."""
    text = "".join(rng.choice(rng.choice(ALPHABETS)) for _ in range(rng.randint(1, 12)))
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 16))
    return text.encode("utf-8") if kind == 1 else text


def new_names(rng: random.Random, held: dict[Node, int], count: int) -> list[Node]:
    """``count`` names neither held nor hashed alike (``"a"`` and ``b"a"``) to one held."""
    taken = {name.encode("utf-8") if isinstance(name, str) else name for name in held}
    names: list[Node] = []
    while len(names) < count:
        name = random_name(rng)
        encoded = name.encode("utf-8") if isinstance(name, str) else name
        if encoded not in taken:
            taken.add(encoded)
            names.append(name)
    return names


def random_key(rng: random.Random) -> tuple[Key, bytes]:
    """A key for conch's ring (str, bytes, bytearray or memoryview) and the bytes tooz gets."""
    raw = rng.randbytes(rng.randint(0, 24))
    kind = rng.randrange(4)
    if kind == 0:
        text = "".join(rng.choice(rng.choice(ALPHABETS)) for _ in range(rng.randint(0, 10)))
        return text, text.encode("utf-8")
    return (raw, bytearray(raw), memoryview(raw))[kind - 1], raw


def assert_same_placement(theirs: tooz_hashring.HashRing, ours: HashRing,
                          rng: random.Random, keys: int = 40) -> None:
    """Both rings hold the same nodes and points and give the same nodes for random keys,
    replica counts and ignored nodes."""
    assert dict(ours.nodes) == theirs.nodes
    assert len(ours) == len(theirs)
    nodes = list(theirs.nodes)
    for _ in range(keys):
        key, key_bytes = random_key(rng)
        replicas = rng.randint(1, len(nodes) + 2)
        ignored = rng.sample(nodes, rng.randint(0, len(nodes))) if rng.random() < 0.4 else None
        if ignored is not None and rng.random() < 0.3:
            ignored.append(random_name(rng))  # a node the ring does not hold
        expected = theirs.get_nodes(key_bytes, ignore_nodes=ignored, replicas=replicas)
        assert ours.get_nodes(key, ignore_nodes=ignored, replicas=replicas) == expected
    key, key_bytes = random_key(rng)
    assert ours[key] == theirs[key_bytes]


@pytest.mark.parametrize("seed", range(150))
def test_placement_matches_tooz_on_generated_rings_and_changes(seed: int) -> None:
    rng = random.Random(seed)
    partitions = round(2 ** rng.uniform(0, 10))  # 1 .. 2**10, as many small as large
    hash_function = "md5" if seed % 3 == 0 else rng.choice(sorted(hash_functions()))
    initial = new_names(rng, {}, rng.randint(0, 6))
    theirs = tooz_hashring.HashRing(initial, partitions=partitions, hash_function=hash_function)
    ours = HashRing(initial, partitions=partitions, hash_function=hash_function)
    assert_same_placement(theirs, ours, rng)
    for _ in range(6):
        change = rng.randrange(4)
        held = list(theirs.nodes)
        if change == 0 or not held:
            node, weight = new_names(rng, theirs.nodes, 1)[0], rng.randint(1, 4)
            theirs.add_node(node, weight)
            ours.add_node(node, weight)
        elif change == 1:  # add again, same or higher weight (lower: see the test below)
            node = rng.choice(held)
            weight = theirs.nodes[node] + rng.randint(0, 2)
            theirs.add_node(node, weight)
            ours.add_node(node, weight)
        elif change == 2:
            batch, weight = new_names(rng, theirs.nodes, rng.randint(1, 3)), rng.randint(1, 3)
            theirs.add_nodes(batch, weight)
            ours.add_nodes(batch, weight)
        else:
            node = rng.choice(held)
            theirs.remove_node(node)
            ours.remove_node(node)
        assert_same_placement(theirs, ours, rng)


def test_the_default_ring_matches_tooz_on_many_keys() -> None:
    rng = random.Random(14)
    nodes = [f"conductor-{number}" for number in range(7)]
    theirs, ours = tooz_hashring.HashRing(nodes), HashRing(nodes)
    assert (ours.partitions, ours.hash_function) == (32, "md5") == (
        theirs.DEFAULT_PARTITION_NUMBER, theirs.DEFAULT_HASH_FUNCTION)
    assert_same_placement(theirs, ours, rng, keys=3000)


def test_the_accepted_hash_functions_are_those_tooz_can_use() -> None:
    for name in sorted(hashlib.algorithms_available):
        try:
            tooz_hashring.HashRing(["a", "b"], hash_function=name).get_nodes(b"key")
        except (TypeError, ValueError):  # shake_* has no fixed digest; a disabled digest
            assert name not in hash_functions()
        else:
            assert name in hash_functions()
            assert HashRing(["a", "b"], hash_function=name).get_nodes(b"key") == (
                tooz_hashring.HashRing(["a", "b"], hash_function=name).get_nodes(b"key"))


def test_an_empty_ring_or_every_node_ignored_gives_no_node() -> None:
    assert HashRing().get_nodes(b"key", replicas=3) == set() == (
        tooz_hashring.HashRing([]).get_nodes(b"key", replicas=3))
    ring = HashRing(["a", "b"])
    assert ring.get_nodes("key", ignore_nodes=["a", "b"]) == set()
    assert len(HashRing()) == 0


def test_a_node_of_weight_zero_is_listed_but_given_no_key() -> None:
    rng = random.Random(0)
    theirs, ours = tooz_hashring.HashRing(["a", "b"]), HashRing(["a", "b"])
    theirs.add_node("idle", 0)
    ours.add_node("idle", 0)
    assert ours.nodes["idle"] == 0
    for _ in range(200):
        key = rng.randbytes(8)
        # tooz waits forever for a third node here; conch gives the two that hold points.
        assert ours.get_nodes(key, replicas=3) == {"a", "b"}
        for replicas in (1, 2):
            assert ours.get_nodes(key, replicas=replicas) == theirs.get_nodes(
                key, replicas=replicas)


def test_a_lowered_weight_gives_back_its_points() -> None:
    rng = random.Random(1)
    ours = HashRing(["a", "b"], partitions=16)
    ours.add_node("a", 3)
    ours.add_node("a", 1)
    assert_same_placement(tooz_hashring.HashRing(["a", "b"], partitions=16), ours, rng)
    ours.remove_node("a")
    assert len(ours) == 16
    assert all(ours.get_nodes(rng.randbytes(8)) == {"b"} for _ in range(100))


def test_removing_one_of_n_nodes_moves_only_its_keys_about_one_nth() -> None:
    nodes = [f"agent-{number}" for number in range(10)]
    ring = HashRing(nodes)
    keys = [f"instance-{number}".encode() for number in range(5000)]
    before = {key: ring.get_nodes(key) for key in keys}
    ring.remove_node("agent-3")
    moved = [key for key in keys if ring.get_nodes(key) != before[key]]
    assert all(before[key] == {"agent-3"} for key in moved)
    assert len(moved) == sum(1 for key in keys if before[key] == {"agent-3"})
    assert 0.5 / 10 < len(moved) / len(keys) < 1.6 / 10
    ring.add_node("agent-3")
    assert all(ring.get_nodes(key) == before[key] for key in keys)


def test_adding_a_node_moves_keys_only_onto_it() -> None:
    ring = HashRing([f"agent-{number}" for number in range(10)])
    keys = [f"instance-{number}".encode() for number in range(5000)]
    before = {key: ring.get_nodes(key) for key in keys}
    ring.add_node("agent-new", weight=2)
    moved = [key for key in keys if ring.get_nodes(key) != before[key]]
    assert all(ring.get_nodes(key) == {"agent-new"} for key in moved)
    assert 0.5 * 2 / 12 < len(moved) / len(keys) < 1.6 * 2 / 12


def test_bad_arguments_get_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"hash function 'fold twice' is not supported.*md5"):
        HashRing(["a"], hash_function="fold twice")
    with pytest.raises(ValueError, match="'shake_128' is not supported"):
        HashRing(["a"], hash_function="shake_128")
    with pytest.raises(ValueError, match="partitions must be at least 1, not 0"):
        HashRing(["a"], partitions=0)
    with pytest.raises(TypeError, match="partitions must be an int, not str"):
        HashRing(["a"], partitions="32")  # type: ignore[arg-type]
    ring = HashRing(["a", "b"])
    for replicas in (0, -1):
        with pytest.raises(ValueError, match=f"replicas must be at least 1, not {replicas}"):
            ring.get_nodes(b"key", replicas=replicas)
    with pytest.raises(TypeError, match="replicas must be an int, not float"):
        ring.get_nodes(b"key", replicas=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight must be at least 0, not -1"):
        ring.add_node("c", weight=-1)
    with pytest.raises(TypeError, match="weight must be an int, not bool"):
        ring.add_node("c", weight=True)
    with pytest.raises(TypeError, match="node must be str or bytes, not int"):
        ring.add_node(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be str or bytes, not int"):
        ring.get_nodes(7)  # type: ignore[arg-type]
    assert dict(ring.nodes) == {"a": 1, "b": 1}


def test_removing_an_unknown_node_raises_unknown_node() -> None:
    ring = HashRing(["a", "b"])
    with pytest.raises(conch.UnknownNode, match="unknown node 'biz'") as raised:
        ring.remove_node("biz")
    assert raised.value.node == "biz"
    assert isinstance(raised.value, conch.ConchError)
    assert isinstance(raised.value, LookupError)
    with pytest.raises(conch.UnknownNode):
        ring.remove_node(b"a")  # "a" is held, b"a" is not
    assert dict(ring.nodes) == {"a": 1, "b": 1}


def test_a_ring_refuses_str_and_bytes_of_one_name_and_adds_nothing_then() -> None:
    ring = HashRing(["a"])
    with pytest.raises(ValueError, match=r"nodes 'a' and b'a' hash alike"):
        ring.add_nodes(["x", b"a"])
    with pytest.raises(ValueError, match="hash alike"):
        HashRing(["é", "é".encode()])
    assert dict(ring.nodes) == {"a": 1}
    assert len(ring) == 32


def test_nodes_is_a_read_only_view() -> None:
    ring = HashRing(["a"])
    with pytest.raises(TypeError):
        ring.nodes["b"] = 1  # type: ignore[index]
    assert repr(ring) == "HashRing(1 nodes, 32 points, partitions=32, hash_function='md5')"


def test_readers_see_whole_states_while_another_thread_changes_the_ring() -> None:
    ring = HashRing(["a", "b", "c"])
    every_node = {"a", "b", "c", "d", "e"}
    failures: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        rng = random.Random(2)
        while not done.is_set():
            try:
                found = ring.get_nodes(rng.randbytes(8), replicas=2)
                assert len(found) == 2 and found <= every_node
            except BaseException as failure:  # reported by the test's thread
                failures.append(failure)
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(100):
            ring.add_nodes(["d", "e"], weight=2)
            ring.remove_node("d")
            ring.remove_node("e")
    finally:
        done.set()
        reader.join()
    assert not failures, failures
