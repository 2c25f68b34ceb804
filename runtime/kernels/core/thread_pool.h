// A small process-wide worker pool for the kernels' parallel loops.
//
// Why not OpenMP: libgomp's workers spin-wait at barriers. Between two of our ops ONNX Runtime (or another
// process) needs the cores, and with any other busy thread on the machine a spinning team turned a 62 ms
// model run into 337 ms (measured, 2 cores). Here waiting threads poll with sched_yield for at most 300 us
// (yield hands the core over at once when anything else wants it), then sleep.
#pragma once
#include <functional>

namespace bebert {

// Runs fn(i) for i in [0, n_tasks) on up to `threads` threads (the caller is one of them); returns when all
// calls have finished. Multi-threaded calls from several threads at once are serialised; a call with one thread
// (or one task) runs inline on its caller without waiting for the others.
void parallel_for(int n_tasks, int threads, const std::function<void(int)>& fn);

}  // namespace bebert
