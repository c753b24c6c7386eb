"""New ids: format, order, uniqueness across threads."""

from __future__ import annotations

import re
import threading

from p2e_kit.ids import new_id

ID = re.compile(r"^tr_[0-9a-f]{12}[0-9a-f]{20}$")


def test_an_id_is_its_prefix_milliseconds_and_80_random_bits():
    ids = [new_id("tr") for _ in range(1000)]
    assert all(ID.match(i) for i in ids)
    assert len(set(ids)) == len(ids)
    millis = [int(i[3:15], 16) for i in ids]
    assert millis == sorted(millis)


def test_threads_never_share_an_id():
    found: list[list[str]] = []

    def make() -> None:
        found.append([new_id("tr") for _ in range(500)])

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in found for i in ids]
    assert len(every) == 4000 and len(set(every)) == 4000
