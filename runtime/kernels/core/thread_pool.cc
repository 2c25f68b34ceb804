#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace bebert {
namespace {

// A waiting thread polls for up to kSpinTime, yielding its core on every poll: on an idle machine yield returns
// at once and the thread is ready for the next op within microseconds; on a busy machine every poll hands the
// core to whoever needs it. After kSpinTime it sleeps on a condition variable.
constexpr auto kSpinTime = std::chrono::microseconds(300);

template <typename Ready>
bool spin_until(Ready ready) {
  const auto end = std::chrono::steady_clock::now() + kSpinTime;
  for (int i = 0;; ++i) {
    if (ready()) return true;
    std::this_thread::yield();
    if ((i & 15) == 15 && std::chrono::steady_clock::now() > end) return false;
  }
}

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // The caller works too, then waits only for helpers that actually joined this job: a helper that has not woken
  // up by the time every task is taken (its core busy with another process) never joins, so a descheduled
  // thread cannot hold the call up. Joining is Dekker-style: a helper counts itself in `running_` and then checks
  // that the job is still `open_`; the caller closes the job and then waits for `running_` to drain (all
  // seq_cst), so either the caller sees the helper or the helper sees the job closed.
  void run(int helpers, int n_tasks, const std::function<void(int)>& fn) {
    grow(helpers);
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      n_tasks_ = n_tasks;
      next_.store(0);
      active_ = helpers;
      open_.store(true);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work();
    open_.store(false);
    // wait for the helpers inside this job: poll briefly, then sleep
    if (!spin_until([&] { return running_.load() == 0; })) {
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return running_.load() == 0; });
    }
  }

 private:
  void grow(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int id = static_cast<int>(workers_.size());
      workers_.emplace_back([this, id] { loop(id); });
    }
  }

  void work() {
    for (int i; (i = next_.fetch_add(1)) < n_tasks_;) (*fn_)(i);
  }

  void loop(int id) {
    unsigned long long seen = 0;
    for (;;) {
      // Poll a little for the next job (the next op usually follows within microseconds), then sleep.
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stop_) return;
      const bool mine = id < active_;
      lk.unlock();
      if (!mine) continue;
      running_.fetch_add(1);
      if (open_.load()) work();
      if (running_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> g(mu_);
        done_cv_.notify_one();
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* fn_ = nullptr;
  int n_tasks_ = 0, active_ = 0;
  std::atomic<int> next_{0}, running_{0};
  std::atomic<bool> open_{false};
  std::atomic<unsigned long long> generation_{0};
  bool stop_ = false;
};

// The calling thread's pool. One per caller instead of one per process: members side by side (each on a thread of
// its own, LiteRT's members runner or ONNX Runtime's parallel executor) each fork and join their own helpers at
// once; a shared pool serialised their multi-threaded calls. Only callers that ask for several threads get one.
Pool& pool() {
  thread_local Pool p;  // destroyed when its thread exits: joins its helpers
  return p;
}

}  // namespace

void parallel_for(int n_tasks, int threads, const std::function<void(int)>& fn) {
  const int helpers = std::min(threads, n_tasks) - 1;
  if (helpers <= 0) {  // inline: a caller that never asks for helpers never creates a pool
    for (int i = 0; i < n_tasks; ++i) fn(i);
    return;
  }
  pool().run(helpers, n_tasks, fn);
}

}  // namespace bebert
