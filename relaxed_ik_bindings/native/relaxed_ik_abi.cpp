// The extern "C" ABI of relaxed_ik_core's ranged-ik branch. Every entry point checks its
// arguments and catches every exception: a bad call yields an empty result, never an abort.
#include <cstdio>
#include <exception>
#include <new>
#include <string>

#include "relaxed_ik.hpp"

#define RIK_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

struct Opt {
  const double* data;
  int length;
};

// The opaque handle callers hold.
struct Handle {
  rik::Instance instance;
  explicit Handle(const std::string& path) : instance(path) {}
};

const Opt kEmpty{nullptr, 0};

Opt view(const std::vector<double>& values) { return Opt{values.data(), static_cast<int>(values.size())}; }

// Shared by solve_position and the legacy solve; called directly (not through the exported
// symbol) so another library's `solve_position` can never be interposed.
Opt solve_position_impl(Handle* handle, const double* positions, int n_positions, const double* quaternions,
                        int n_quaternions, const double* tolerances, int n_tolerances) noexcept {
  if (handle == nullptr) return kEmpty;
  try {
    if (!handle->instance.solve_position(positions, n_positions, quaternions, n_quaternions, tolerances,
                                         n_tolerances)) {
      return kEmpty;
    }
    return view(handle->instance.solution());
  } catch (...) {
    return kEmpty;
  }
}

}  // namespace

RIK_EXPORT Handle* relaxed_ik_new(const char* path_to_settings) noexcept {
  // NULL means <cwd>/configs/settings.yaml, as upstream.
  const std::string path = path_to_settings ? path_to_settings : "configs/settings.yaml";
  try {
    return new Handle(path);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "relaxed_ik_new: %s\n", error.what());
  } catch (...) {
    std::fprintf(stderr, "relaxed_ik_new: unknown error\n");
  }
  return nullptr;
}

RIK_EXPORT void relaxed_ik_free(Handle* handle) noexcept { delete handle; }

RIK_EXPORT void reset(Handle* handle, const double* joint_state, int length) noexcept {
  if (handle == nullptr) return;
  try {
    handle->instance.reset(joint_state, length);
  } catch (...) {
  }
}

RIK_EXPORT Opt solve_position(Handle* handle, const double* positions, int n_positions, const double* quaternions,
                              int n_quaternions, const double* tolerances, int n_tolerances) noexcept {
  return solve_position_impl(handle, positions, n_positions, quaternions, n_quaternions, tolerances, n_tolerances);
}

RIK_EXPORT Opt solve_velocity(Handle* handle, const double* position_increments, int n_position,
                              const double* rotation_increments, int n_rotation, const double* tolerances,
                              int n_tolerances) noexcept {
  if (handle == nullptr) return kEmpty;
  try {
    if (!handle->instance.solve_velocity(position_increments, n_position, rotation_increments, n_rotation,
                                         tolerances, n_tolerances)) {
      return kEmpty;
    }
    return view(handle->instance.solution());
  } catch (...) {
    return kEmpty;
  }
}

RIK_EXPORT Opt get_ee_positions(Handle* handle) noexcept {
  if (handle == nullptr) return kEmpty;
  try {
    return view(handle->instance.goal_positions());
  } catch (...) {
    return kEmpty;
  }
}

// Legacy name of solve_position.
RIK_EXPORT Opt solve(Handle* handle, const double* positions, int n_positions, const double* quaternions,
                     int n_quaternions, const double* tolerances, int n_tolerances) noexcept {
  return solve_position_impl(handle, positions, n_positions, quaternions, n_quaternions, tolerances, n_tolerances);
}
