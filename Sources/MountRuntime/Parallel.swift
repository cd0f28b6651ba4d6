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
    switch startThread(job.run, detached: false) {
    case .success(let thread): threads.append(thread)
    case .failure: job.run()
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

/// Runs `body` on a thread of its own that nobody joins (the helpers of the loop: probes,
/// unmounts, the hang check). Plain pthreads: Foundation's `Thread` alone would bring all of
/// Foundation into the daemon.
func startDetachedThread(_ body: @escaping @Sendable () -> Void) throws(RuntimeError) {
  if case .failure(let code) = startThread(body, detached: true) {
    throw RuntimeError(.thread, "cannot start a thread", errno: code.rawValue)
  }
}

/// `pthread_create` for a Swift closure; the errno on failure.
private func startThread(_ body: @escaping @Sendable () -> Void, detached: Bool)
  -> Result<pthread_t, ThreadStartError>
{
  let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
  var attributes = pthread_attr_t()
  pthread_attr_init(&attributes)
  defer { pthread_attr_destroy(&attributes) }
  if detached { pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED)) }
  var thread = pthread_t()
  let status = pthread_create(
    &thread, &attributes,
    { context in
      Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue().body()
      return nil
    }, context)
  guard status == 0 else {
    Unmanaged<ThreadBody>.fromOpaque(context).release()
    return .failure(ThreadStartError(rawValue: status))
  }
  return .success(thread)
}

private struct ThreadStartError: Error {
  let rawValue: Int32
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
