// One solver instance: the chains of a settings file, their goals, the solution history and the
// buffers handed out through the C ABI (owned here, valid until the instance's next call).
#pragma once

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "chain_solver.hpp"
#include "kinematics.hpp"

namespace rik {

class Instance {
 public:
  // Loads settings + URDF; throws std::runtime_error with a readable reason.
  explicit Instance(const std::string& settings_path);

  int num_chains() const { return static_cast<int>(chains_.size()); }
  int num_dofs() const { return num_dofs_; }

  // Each returns false (and changes nothing) when the input is invalid: wrong lengths, NULL
  // pointers, non-finite numbers, zero quaternions, negative tolerances.
  bool solve_position(const double* positions, int n_positions, const double* quaternions_xyzw,
                      int n_quaternions, const double* tolerances, int n_tolerances);
  bool solve_velocity(const double* position_increments, int n_position, const double* rotation_increments,
                      int n_rotation, const double* tolerances, int n_tolerances);
  bool reset(const double* q, int n);

  // Latest solution (num_dofs values).
  const std::vector<double>& solution() const { return solution_out_; }
  // Current goal positions, 3 per chain.
  const std::vector<double>& goal_positions();

 private:
  bool read_tolerances(const double* tolerances, int n_tolerances, std::vector<Vector6d>* out) const;
  void solve_all();
  void set_goals_from_configuration(const std::vector<double>& q);

  std::vector<Chain> chains_;
  std::vector<ChainSolver> solvers_;
  std::vector<int> offsets_;  // first joint index of each chain in the joint vector
  int num_dofs_ = 0;
  SolverOptions options_;
  int restarts_ = 12;

  std::vector<Goal> goals_;
  std::vector<double> current_;   // latest solution
  std::vector<double> previous_;  // the one before (kept for the ABI's reset semantics)
  std::mt19937_64 random_;        // restart seeds; fixed seed so runs are reproducible

  std::vector<double> solution_out_;
  std::vector<double> goal_positions_out_;
};

}  // namespace rik
