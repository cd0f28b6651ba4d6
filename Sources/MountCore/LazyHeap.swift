import HeapModule

/// A min-max heap whose entries go stale instead of being removed: the owner pushes an entry
/// whenever a key changes and says, when asked, which entries still hold. Stale entries are
/// dropped as they reach either end, and the whole heap is rebuilt when they outnumber the
/// live ones, so every operation stays logarithmic in the number of live entries.
struct LazyHeap<Element: Comparable & Sendable>: Sendable {
  private var heap = Heap<Element>()
  /// Pushes since the last rebuild: a bound on stale entries.
  private var pushesSinceRebuild = 0

  mutating func push(_ element: Element) {
    heap.insert(element)
    pushesSinceRebuild += 1
  }

  /// The smallest entry that still holds, dropping stale ones on the way.
  mutating func min(where isLive: (Element) -> Bool) -> Element? {
    while let first = heap.min {
      if isLive(first) { return first }
      heap.removeMin()
    }
    return nil
  }

  /// The largest entry that still holds, dropping stale ones on the way.
  mutating func max(where isLive: (Element) -> Bool) -> Element? {
    while let last = heap.max {
      if isLive(last) { return last }
      heap.removeMax()
    }
    return nil
  }

  /// Removes and returns the smallest live entry if it is at most `bound`.
  mutating func popMin(through bound: Element, where isLive: (Element) -> Bool) -> Element? {
    guard let first = min(where: isLive), first <= bound else { return nil }
    return heap.removeMin()
  }

  /// Up to `count` smallest live entries, in order, without removing them.
  mutating func smallest(_ count: Int, where isLive: (Element) -> Bool) -> [Element] {
    var taken: [Element] = []
    while taken.count < count, min(where: isLive) != nil {
      taken.append(heap.removeMin())
    }
    for element in taken { heap.insert(element) }
    return taken
  }

  /// Rebuilds from the live entries once stale ones dominate; `liveCount` is how many keys
  /// currently have an entry that holds.
  mutating func compact(liveCount: Int, where isLive: (Element) -> Bool) {
    guard pushesSinceRebuild > 2 * liveCount + 64 else { return }
    heap = Heap(heap.unordered.filter(isLive))
    pushesSinceRebuild = heap.count
  }
}
