"""Free-capacity indices: per pool (GPU type, node size, reservation), nodes bucketed by free GPUs.

Why buckets: a pass over 100,000 jobs on 32,500 nodes cannot scan nodes per job. Partial nodes
sit in one dict per free-GPU count, so best fit for a g-GPU job looks at most `size` buckets;
wholly free nodes sit per network block, and blocks in buckets by how many whole nodes they
have, so a multi-node job finds the best-fitting block, or the fewest blocks, in O(blocks).
Dicts keep insertion order and `popitem` is LIFO, so choices are deterministic and O(1).

Nodes carrying a future hold (a backfill or advance reservation) are kept out of the fast
indices, in `held`; only jobs that end before the hold (checked by `timeline`) may use them.
"""

from __future__ import annotations


class Pool:
    """Nodes of one GPU type and size, in the general pool or in one active reservation."""

    __slots__ = (
        "block_whole",
        "bucket",
        "count",
        "gpu_type",
        "held",
        "index",
        "nodes",
        "partial",
        "preemptible",
        "resv",
        "site_whole",
        "size",
        "whole",
        "whole_total",
    )

    def __init__(self, index: int, gpu_type: str, size: int, resv: int) -> None:
        self.index = index
        self.gpu_type = gpu_type
        self.size = size
        self.resv = resv  # -1: general pool; else index of the active advance reservation
        self.count = [0] * (size + 1)  # unheld nodes by free-GPU count
        self.partial: list[dict[int, None]] = [{} for _ in range(size + 1)]
        self.whole: dict[int, dict[int, None]] = {}
        self.bucket: list[dict[int, None]] = [{}]
        self.block_whole: dict[int, int] = {}
        self.site_whole: dict[int, int] = {}
        self.whole_total = 0
        self.held: dict[int, None] = {}
        self.nodes: dict[int, None] = {}
        self.preemptible = 0  # running preemptible job parts on this pool's nodes

    # -- index maintenance ---------------------------------------------------------------
    def insert(self, n: int, free: int, block: int, site: int, held: bool) -> None:
        if held:
            self.held[n] = None
            return
        self.count[free] += 1
        if free == self.size:
            members = self.whole.get(block)
            if members is None:
                members = self.whole[block] = {}
            members[n] = None
            c = self.block_whole.get(block, 0)
            if c:
                del self.bucket[c][block]
            c += 1
            self.block_whole[block] = c
            if c >= len(self.bucket):
                self.bucket.append({})
            self.bucket[c][block] = None
            self.site_whole[site] = self.site_whole.get(site, 0) + 1
            self.whole_total += 1
        elif free:
            self.partial[free][n] = None

    def delete(self, n: int, free: int, block: int, site: int, held: bool) -> None:
        if held:
            del self.held[n]
            return
        self.count[free] -= 1
        if free == self.size:
            del self.whole[block][n]
            c = self.block_whole[block]
            del self.bucket[c][block]
            c -= 1
            self.block_whole[block] = c
            if c:
                self.bucket[c][block] = None
            self.site_whole[site] -= 1
            self.whole_total -= 1
        elif free:
            del self.partial[free][n]

    def change(self, n: int, was: int, now: int, block: int, site: int) -> None:
        """An unheld node went from `was` to `now` free GPUs: `delete` then `insert`, fused,
        because a pass does this once per start (dict order ends up exactly the same)."""
        if was != self.size and now != self.size:
            count = self.count
            count[was] -= 1
            count[now] += 1
            partial = self.partial
            if was:
                del partial[was][n]
            if now:
                partial[now][n] = None
            return
        self.delete(n, was, block, site, False)
        self.insert(n, now, block, site, False)

    def load(
        self, free: list[list[int]], block: list[int], site: list[int], held: set[int]
    ) -> None:
        """Index every member node at once (same dict orders as inserting them one by one in
        node order): building a 32,500-node cluster this way is several times faster."""
        size = self.size
        count, partial, whole = self.count, self.partial, self.whole
        last: dict[int, int] = {}
        for n in sorted(self.nodes):
            if n in held:
                self.held[n] = None
                continue
            f = len(free[n])
            count[f] += 1
            if f == size:
                b = block[n]
                members = whole.get(b)
                if members is None:
                    members = whole[b] = {}
                members[n] = None
                last[b] = n
                self.site_whole[site[n]] = self.site_whole.get(site[n], 0) + 1
            elif f:
                partial[f][n] = None
        # A block enters bucket c when its c-th whole node is inserted, so within a bucket
        # blocks are ordered by their last whole node.
        bucket, block_whole = self.bucket, self.block_whole
        for _, b in sorted((n, b) for b, n in last.items()):
            c = len(whole[b])
            block_whole[b] = c
            while c >= len(bucket):
                bucket.append({})
            bucket[c][b] = None
            self.whole_total += c

    # -- queries -------------------------------------------------------------------------
    def fits_single(self, g: int) -> bool:
        count = self.count
        return any(count[f] for f in range(g, self.size + 1))

    def pick_single(self, g: int) -> int:
        """Best fit: the partial node with the fewest free GPUs >= g, else a whole node from
        the block with the fewest whole nodes (keeping big blocks whole for gang jobs).
        Returns -1 if nothing fits."""
        for f in range(g, self.size):
            d = self.partial[f]
            if d:
                n, _ = d.popitem()
                d[n] = None
                return n
        if not self.whole_total:
            return -1
        for c in range(1, len(self.bucket)):
            blocks = self.bucket[c]
            if blocks:
                b, _ = blocks.popitem()
                blocks[b] = None
                members = self.whole[b]
                n, _ = members.popitem()
                members[n] = None
                return n
        return -1
