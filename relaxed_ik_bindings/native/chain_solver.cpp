// Levenberg-Marquardt ranged IK for one chain.
#include "chain_solver.hpp"

#include <Eigen/Cholesky>

#include <algorithm>
#include <cmath>

namespace rik {
namespace {

inline Eigen::Matrix3d skew(const Eigen::Vector3d& v) {
  Eigen::Matrix3d m;
  m << 0.0, -v.z(), v.y(), v.z(), 0.0, -v.x(), -v.y(), v.x(), 0.0;
  return m;
}

// Rotation vector (axis * angle, angle in [0, pi]) of a rotation matrix.
inline Eigen::Vector3d log_so3(const Eigen::Matrix3d& rotation) {
  Eigen::Quaterniond q(rotation);
  if (q.w() < 0.0) q.coeffs() = -q.coeffs();  // shortest rotation
  const double sin_half = q.vec().norm();
  if (sin_half < 1e-12) return 2.0 * q.vec();
  const double angle = 2.0 * std::atan2(sin_half, q.w());
  return q.vec() * (angle / sin_half);
}

// Inverse left Jacobian of SO(3): how the rotation vector of exp(d) * exp(phi) moves with d.
inline Eigen::Matrix3d inverse_left_jacobian(const Eigen::Vector3d& phi) {
  const double angle = phi.norm();
  const Eigen::Matrix3d phi_hat = skew(phi);
  double coefficient = 1.0 / 12.0;
  if (angle > 1e-6) {
    const double half = 0.5 * angle;
    coefficient = 1.0 / (angle * angle) - std::cos(half) / (2.0 * angle * std::sin(half));
  }
  return Eigen::Matrix3d::Identity() - 0.5 * phi_hat + coefficient * phi_hat * phi_hat;
}

// Part of `error` outside [-tolerance, tolerance]; `active` says whether the axis is constrained
// (a zero tolerance keeps the axis constrained even at zero error).
inline double dead_zone(double error, double tolerance, bool* active) {
  if (error > tolerance) {
    *active = true;
    return error - tolerance;
  }
  if (error < -tolerance) {
    *active = true;
    return error + tolerance;
  }
  *active = tolerance <= 0.0;
  return 0.0;
}

constexpr double kMaxLimitGradient = 2.0;
// Null-space motion only in a solve's first iterations: it bounds the self-motion per call, so
// trajectory tracking stays smooth; later iterations only converge.
constexpr int kNullspaceIterations = 3;
// Largest null-space change of any joint per iteration (rad or m).
constexpr double kMaxNullspaceStep = 0.01;

}  // namespace

void ChainSolver::limit_gradient(const JointVector& q, JointVector* gradient) const {
  // Gradient of H(q) = sum (u - l)^2 / (4 (u - q)(q - l)) (Chan & Dubey's joint-limit measure): zero
  // mid-range, growing without bound at either limit.
  const int n = chain_->dof();
  for (int j = 0; j < n; ++j) {
    const double low = lower_[j];
    const double high = upper_[j];
    if (!std::isfinite(low) || !std::isfinite(high) || high - low < 1e-9) {
      (*gradient)[j] = 0.0;
      continue;
    }
    const double to_high = std::max(high - q[j], 1e-6);
    const double to_low = std::max(q[j] - low, 1e-6);
    const double range = high - low;
    (*gradient)[j] = std::min(range * range * (to_low - to_high) / (4.0 * to_high * to_high * to_low * to_low), 1e8);
    (*gradient)[j] = std::max((*gradient)[j], -1e8);
  }
}

ChainSolver::ChainSolver(const Chain* chain, const SolverOptions& options)
    : chain_(chain), options_(options) {
  const int n = chain_->dof();
  lower_.resize(n);
  upper_.resize(n);
  speed_.resize(n);
  double fastest = 0.0;
  for (int i = 0; i < n; ++i) fastest = std::max(fastest, chain_->joints[i].velocity);
  for (int i = 0; i < n; ++i) {
    lower_[i] = chain_->joints[i].lower;
    upper_[i] = chain_->joints[i].upper;
    // Velocity limit relative to the fastest joint (1 when the URDF gives none).
    const double velocity = chain_->joints[i].velocity;
    speed_[i] = (fastest > 0.0 && velocity > 0.0) ? velocity / fastest : 1.0;
  }
}

void ChainSolver::clamp_to_limits(JointVector* q) const {
  *q = q->cwiseMax(lower_).cwiseMin(upper_);
}

void ChainSolver::compute_residual(const Goal& goal, const Eigen::Matrix3d& goal_rotation_t,
                                   const JointVector& q, bool with_jacobian, Residual* out) const {
  Pose pose;
  if (with_jacobian) {
    forward_with_jacobian(*chain_, q.data(), &pose, &out->jacobian);
  } else {
    pose = forward(*chain_, q.data());
  }
  // Errors in the goal frame, as upstream ranged-ik measures them.
  const Eigen::Vector3d position_error = goal_rotation_t * (pose.position - goal.position);
  const Eigen::Vector3d rotation_error = log_so3(goal_rotation_t * pose.rotation);
  const double scale = options_.rotation_scale;
  bool active[6];
  for (int i = 0; i < 3; ++i) {
    out->value[i] = dead_zone(position_error[i], goal.tolerance[i], &active[i]);
    out->value[3 + i] = scale * dead_zone(rotation_error[i], goal.tolerance[3 + i], &active[3 + i]);
  }
  out->cost = out->value.squaredNorm();
  if (!with_jacobian) return;
  const int n = chain_->dof();
  Jacobian& jac = out->jacobian;
  jac.topRows<3>() = (goal_rotation_t * jac.topRows<3>()).eval();
  const Eigen::Matrix3d rotation_map = scale * inverse_left_jacobian(rotation_error) * goal_rotation_t;
  jac.bottomRows<3>() = (rotation_map * jac.bottomRows<3>()).eval();
  for (int i = 0; i < 6; ++i) {
    if (!active[i]) jac.row(i).head(n).setZero();
  }
}

ChainResult ChainSolver::evaluate(const Goal& goal, const JointVector& q) const {
  const Eigen::Matrix3d goal_rotation_t = goal.orientation.toRotationMatrix().transpose();
  Residual residual;
  compute_residual(goal, goal_rotation_t, q, false, &residual);
  ChainResult result;
  result.position_error = residual.value.head<3>().norm();
  result.rotation_error = residual.value.tail<3>().norm() / options_.rotation_scale;
  result.success = result.position_error <= options_.success_position &&
                   result.rotation_error <= options_.success_rotation;
  return result;
}

ChainResult ChainSolver::solve(const Goal& goal, const JointVector& seed, const JointVector& reference,
                               int max_iterations, JointVector* q_out) const {
  const int n = chain_->dof();
  const Eigen::Matrix3d goal_rotation_t = goal.orientation.toRotationMatrix().transpose();
  JointVector q = seed;
  clamp_to_limits(&q);

  Residual residual_a;
  Residual residual_b;
  Residual* current = &residual_a;
  Residual* trial = &residual_b;
  compute_residual(goal, goal_rotation_t, q, true, current);
  double damping = options_.initial_damping;
  int iteration = 0;
  bool use_nullspace = true;
  int slow_iterations = 0;
  JointVector step(n);
  JointVector fixed_step(n);
  JointVector candidate(n);
  JointVector pull(n);
  JointVector gradient(n);
  JointVector scale(n);
  Eigen::Matrix<bool, Eigen::Dynamic, 1, Eigen::ColMajor, kMaxChainDof, 1> blocked(n);

  for (; iteration < max_iterations && current->cost > options_.converged_cost; ++iteration) {
    // Active set: joints whose step would cross a limit move onto it and leave the least squares.
    blocked.setConstant(false);
    fixed_step.setZero();
    // Weighted least norm: a joint close to a limit gets a large weight, so the redundancy moves
    // the other joints instead of driving it into the limit and getting stuck there; and joint
    // motion is measured relative to each joint's velocity limit, so slow joints move less.
    limit_gradient(q, &gradient);
    for (int j = 0; j < n; ++j) scale[j] = speed_[j] / std::sqrt(1.0 + std::abs(gradient[j]));
    for (int pass = 0; pass <= n; ++pass) {
      Jacobian free_jacobian = current->jacobian;
      for (int j = 0; j < n; ++j) {
        free_jacobian.col(j) *= blocked[j] ? 0.0 : scale[j];
      }
      const Vector6d target = -(current->value + current->jacobian * fixed_step);
      Eigen::Matrix<double, 6, 6> normal = free_jacobian * free_jacobian.transpose();
      normal.diagonal().array() += damping;
      const Eigen::LDLT<Eigen::Matrix<double, 6, 6>> factor(normal);
      step = scale.cwiseProduct(free_jacobian.transpose() * factor.solve(target));
      if (use_nullspace && iteration < kNullspaceIterations) {
        // Secondary goals in the (weighted) null space: back toward the reference configuration
        // and away from nearby limits.
        pull = options_.nullspace_gain * (reference - q) -
               options_.limit_avoidance_gain * gradient.cwiseMax(-kMaxLimitGradient).cwiseMin(kMaxLimitGradient);
        for (int j = 0; j < n; ++j) {
          if (blocked[j] || !std::isfinite(pull[j])) pull[j] = 0.0;
        }
        // Projected with the unweighted Jacobian: with the weights, a heavy joint's small pull
        // would be amplified into large self-motion of the others.
        Jacobian plain_jacobian = current->jacobian;
        for (int j = 0; j < n; ++j) {
          if (blocked[j]) plain_jacobian.col(j).setZero();
        }
        Eigen::Matrix<double, 6, 6> plain_normal = plain_jacobian * plain_jacobian.transpose();
        plain_normal.diagonal().array() += damping;
        JointVector projected =
            pull - plain_jacobian.transpose() * plain_normal.ldlt().solve(plain_jacobian * pull);
        const double largest_pull = projected.cwiseAbs().maxCoeff();
        if (largest_pull > kMaxNullspaceStep) projected *= kMaxNullspaceStep / largest_pull;
        step += projected;
      }
      step += fixed_step;
      const double largest = step.cwiseAbs().maxCoeff();
      if (largest > options_.max_step) step *= options_.max_step / largest;
      bool newly_blocked = false;
      for (int j = 0; j < n; ++j) {
        if (blocked[j]) continue;
        const double next = q[j] + step[j];
        if (next > upper_[j] || next < lower_[j]) {
          blocked[j] = true;
          fixed_step[j] = (next > upper_[j] ? upper_[j] : lower_[j]) - q[j];
          newly_blocked = true;
        }
      }
      if (!newly_blocked) break;
    }
    candidate = q + step;
    clamp_to_limits(&candidate);
    compute_residual(goal, goal_rotation_t, candidate, true, trial);
    if (trial->cost < current->cost) {
      const double decrease = current->cost - trial->cost;
      q = candidate;
      std::swap(current, trial);
      damping = std::max(damping * 0.3, 1e-12);
      use_nullspace = true;
      // Stalled on a residual that will not go away (unreachable goal or a minimum held by the
      // joint limits): stop instead of spending the whole iteration budget.
      slow_iterations = decrease < 1e-3 * current->cost ? slow_iterations + 1 : 0;
      if (slow_iterations >= 6) break;
    } else {
      damping *= 5.0;
      use_nullspace = false;
      if (damping > 1e6) break;
    }
  }

  *q_out = q;
  ChainResult result;
  result.iterations = iteration;
  result.position_error = current->value.head<3>().norm();
  result.rotation_error = current->value.tail<3>().norm() / options_.rotation_scale;
  result.success = result.position_error <= options_.success_position &&
                   result.rotation_error <= options_.success_rotation;
  return result;
}

}  // namespace rik
