// Ranged inverse kinematics for one serial chain: damped least squares (Levenberg-Marquardt) on
// flat-bottomed pose residuals, hard joint limits by an active set, and a null-space pull toward
// a reference configuration (the previous solution) for smoothness.
#pragma once

#include <Eigen/Core>
#include <Eigen/Geometry>

#include "kinematics.hpp"

namespace rik {

using Vector6d = Eigen::Matrix<double, 6, 1>;

struct Goal {
  Eigen::Vector3d position = Eigen::Vector3d::Zero();        // base frame
  Eigen::Quaterniond orientation = Eigen::Quaterniond::Identity();  // unit
  // Half-widths of the flat bottom: x y z (m) and rx ry rz (rad), along the goal frame's axes.
  Vector6d tolerance = Vector6d::Zero();
};

struct SolverOptions {
  int max_iterations = 100;
  int restart_iterations = 60;
  // Metres per radian: how rotation residuals weigh against position residuals (about the
  // distance from the wrist to the tool tip).
  double rotation_scale = 0.2;
  double initial_damping = 1e-3;
  // A solve counts as a success when the residual outside the tolerances is at most this.
  double success_position = 1e-4;  // m
  double success_rotation = 1e-3;  // rad
  // Iterations stop once the squared weighted residual is this small (about 1e-9 m).
  double converged_cost = 1e-18;
  // Largest joint change per iteration (rad or m): a trust region against huge Gauss-Newton
  // steps near singularities.
  double max_step = 0.4;
  // Fraction of the distance to the reference configuration recovered per iteration through the
  // Jacobian's null space.
  double nullspace_gain = 0.1;
  // Step (rad per iteration, per unit of the clamped joint-limit gradient) away from nearby
  // limits through the null space.
  double limit_avoidance_gain = 0.01;
};

struct ChainResult {
  bool success = false;
  double position_error = 0.0;  // m, outside the tolerance
  double rotation_error = 0.0;  // rad, outside the tolerance
  int iterations = 0;
};

class ChainSolver {
 public:
  ChainSolver(const Chain* chain, const SolverOptions& options);

  // Solves from `seed` (clamped into the limits first). If the seed already meets the goal within
  // its tolerances it is returned unchanged. `reference` is what the null-space term pulls toward.
  ChainResult solve(const Goal& goal, const JointVector& seed, const JointVector& reference,
                    int max_iterations, JointVector* q_out) const;

  // Pose error of q against the goal, outside the tolerances.
  ChainResult evaluate(const Goal& goal, const JointVector& q) const;

  void clamp_to_limits(JointVector* q) const;
  const Chain& chain() const { return *chain_; }

 private:
  struct Residual {
    Vector6d value;   // weighted residual outside the tolerances
    Jacobian jacobian;  // d value / d q (rows of axes inside their tolerance are zero)
    double cost = 0.0;  // value.squaredNorm()
  };
  void compute_residual(const Goal& goal, const Eigen::Matrix3d& goal_rotation_t, const JointVector& q,
                        bool with_jacobian, Residual* out) const;

  // Gradient of the joint-limit measure at q (zero for continuous joints).
  void limit_gradient(const JointVector& q, JointVector* gradient) const;

  const Chain* chain_;
  SolverOptions options_;
  JointVector lower_;
  JointVector upper_;
  JointVector speed_;  // velocity limit / fastest joint's, weighs the least-norm step
};

}  // namespace rik
