import Glibc
import Synchronization

/// Runs each of `parts` on a thread of its own while the calling thread runs `meanwhile`, and
/// returns their results in order when all are done; the first error is thrown. For work that
/// splits into independent parts, such as the state of an upgrade, which the daemon encodes
/// and decodes while every mount waits. A part whose thread cannot be started runs on the
/// calling thread.
func inParallel<T: Sendable>(
  _ parts: [@Sendable () throws -> T], meanwhile: () throws -> Void
) throws -> [T] {
  let results = ParallelResults<T>(count: parts.count)
  var threads: [pthread_t] = []
  for index in parts.indices {
    let job = ParallelJob(index: index, work: parts[index], results: results)
    let context = Unmanaged.passRetained(ThreadBody(job.run)).toOpaque()
    var thread = pthread_t()
    let status = pthread_create(
      &thread, nil,
      { context in
        Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue().body()
        return nil
      }, context)
    if status == 0 {
      threads.append(thread)
    } else {
      Unmanaged<ThreadBody>.fromOpaque(context).release()
      job.run()
    }
  }
  let here = Result { try meanwhile() }
  for thread in threads { pthread_join(thread, nil) }
  try here.get()
  return try results.values.withLock { values in try values.map { try $0!.get() } }
}

private final class ParallelResults<T: Sendable>: Sendable {
  let values: Mutex<[Result<T, any Error>?]>

  init(count: Int) { values = Mutex(Array(repeating: nil, count: count)) }
}

/// What a thread runs: the entry point of `pthread_create` cannot be generic.
private final class ThreadBody: Sendable {
  let body: @Sendable () -> Void

  init(_ body: @escaping @Sendable () -> Void) { self.body = body }
}

/// One part and where its result goes.
private final class ParallelJob<T: Sendable>: Sendable {
  let index: Int
  let work: @Sendable () throws -> T
  let results: ParallelResults<T>

  init(index: Int, work: @escaping @Sendable () throws -> T, results: ParallelResults<T>) {
    self.index = index
    self.work = work
    self.results = results
  }

  func run() {
    let result = Result { try work() }
    results.values.withLock { $0[index] = result }
  }
}
