// Small worker pools for the kernels' parallel loops: one per calling thread, created on its first multi-threaded
// call (its helpers end with it), so ensemble members running side by side on their own threads, several
// threads each, never queue behind one another.
//
// Why not OpenMP: libgomp's workers spin-wait at barriers. Between two of our ops ONNX Runtime (or another
// process) needs the cores, and with any other busy thread on the machine a spinning team turned a 62 ms
// model run into 337 ms (measured, 2 cores). Here waiting threads poll with sched_yield for at most 300 us
// (yield hands the core over at once when anything else wants it), then sleep.
#pragma once
#include <functional>

namespace bebert {

// Runs fn(i) for i in [0, n_tasks) on up to `threads` threads (the caller is one of them, the others its own
// pool's helpers); returns when all calls have finished. A call with one thread (or one task) runs inline.
void parallel_for(int n_tasks, int threads, const std::function<void(int)>& fn);

}  // namespace bebert
