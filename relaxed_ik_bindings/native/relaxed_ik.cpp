// Solver instance: input checks, goal bookkeeping, warm start and restarts.
#include "relaxed_ik.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "settings.hpp"
#include "urdf_model.hpp"

namespace rik {
namespace {

// Restarts near the previous solution before the uniform ones, with these spreads (rad or m).
constexpr int kLocalRestarts = 6;
constexpr double kLocalSpread[3] = {0.05, 0.15, 0.4};

bool all_finite(const double* values, int n) {
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(values[i])) return false;
  }
  return true;
}

// Unit quaternion from x y z w, or false when it has no direction.
bool read_quaternion(const double* xyzw, Eigen::Quaterniond* out) {
  Eigen::Quaterniond q(xyzw[3], xyzw[0], xyzw[1], xyzw[2]);
  const double norm = q.norm();
  if (!(norm > 1e-9) || !std::isfinite(norm)) return false;
  q.coeffs() /= norm;
  *out = q;
  return true;
}

Eigen::Quaterniond exp_quaternion(const Eigen::Vector3d& rotation_vector) {
  const double angle = rotation_vector.norm();
  if (angle < 1e-12) {
    Eigen::Quaterniond q(1.0, 0.5 * rotation_vector.x(), 0.5 * rotation_vector.y(), 0.5 * rotation_vector.z());
    return q.normalized();
  }
  return Eigen::Quaterniond(Eigen::AngleAxisd(angle, rotation_vector / angle));
}

}  // namespace

Instance::Instance(const std::string& settings_path) : random_(0x5eed1234u) {
  const Settings settings = load_settings(settings_path);
  const std::string urdf_text = read_text_file(settings.urdf_path);
  for (std::size_t i = 0; i < settings.base_links.size(); ++i) {
    chains_.push_back(load_chain_from_urdf_text(urdf_text, settings.base_links[i], settings.ee_links[i]));
  }
  for (const Chain& chain : chains_) {
    offsets_.push_back(num_dofs_);
    num_dofs_ += chain.dof();
  }
  // Solvers hold pointers into chains_, which no longer changes size.
  for (const Chain& chain : chains_) solvers_.emplace_back(&chain, options_);

  std::vector<double> start = settings.starting_config;
  if (start.empty()) start.assign(num_dofs_, 0.0);
  if (static_cast<int>(start.size()) != num_dofs_) {
    throw std::runtime_error("settings: 'starting_config' has " + std::to_string(start.size()) +
                             " values but the chains have " + std::to_string(num_dofs_) + " joints");
  }
  goals_.resize(chains_.size());
  current_ = start;
  previous_ = start;
  solution_out_ = start;
  set_goals_from_configuration(start);
}

void Instance::set_goals_from_configuration(const std::vector<double>& q) {
  for (std::size_t c = 0; c < chains_.size(); ++c) {
    const Pose pose = forward(chains_[c], q.data() + offsets_[c]);
    goals_[c].position = pose.position;
    goals_[c].orientation = Eigen::Quaterniond(pose.rotation).normalized();
  }
}

bool Instance::read_tolerances(const double* tolerances, int n_tolerances, std::vector<Vector6d>* out) const {
  if (tolerances == nullptr || n_tolerances != 6 * num_chains() || !all_finite(tolerances, n_tolerances)) return false;
  out->resize(chains_.size());
  for (int c = 0; c < num_chains(); ++c) {
    for (int k = 0; k < 6; ++k) {
      const double value = tolerances[6 * c + k];
      if (value < 0.0) return false;
      (*out)[c][k] = value;
    }
  }
  return true;
}

bool Instance::solve_position(const double* positions, int n_positions, const double* quaternions_xyzw,
                              int n_quaternions, const double* tolerances, int n_tolerances) {
  const int n = num_chains();
  if (positions == nullptr || quaternions_xyzw == nullptr) return false;
  if (n_positions != 3 * n || n_quaternions != 4 * n) return false;
  if (!all_finite(positions, n_positions) || !all_finite(quaternions_xyzw, n_quaternions)) return false;
  std::vector<Vector6d> tolerance_values;
  if (!read_tolerances(tolerances, n_tolerances, &tolerance_values)) return false;
  std::vector<Eigen::Quaterniond> orientations(n);
  for (int c = 0; c < n; ++c) {
    if (!read_quaternion(quaternions_xyzw + 4 * c, &orientations[c])) return false;
  }
  for (int c = 0; c < n; ++c) {
    goals_[c].position = Eigen::Vector3d(positions[3 * c], positions[3 * c + 1], positions[3 * c + 2]);
    goals_[c].orientation = orientations[c];
    goals_[c].tolerance = tolerance_values[c];
  }
  solve_all();
  return true;
}

bool Instance::solve_velocity(const double* position_increments, int n_position, const double* rotation_increments,
                              int n_rotation, const double* tolerances, int n_tolerances) {
  const int n = num_chains();
  if (position_increments == nullptr || rotation_increments == nullptr) return false;
  if (n_position != 3 * n || n_rotation != 3 * n) return false;
  if (!all_finite(position_increments, n_position) || !all_finite(rotation_increments, n_rotation)) return false;
  std::vector<Vector6d> tolerance_values;
  if (!read_tolerances(tolerances, n_tolerances, &tolerance_values)) return false;
  for (int c = 0; c < n; ++c) {
    const Eigen::Vector3d dp(position_increments[3 * c], position_increments[3 * c + 1], position_increments[3 * c + 2]);
    const Eigen::Vector3d dr(rotation_increments[3 * c], rotation_increments[3 * c + 1], rotation_increments[3 * c + 2]);
    goals_[c].position += dp;
    // Increment in the base frame, applied on the left, as upstream does.
    goals_[c].orientation = (exp_quaternion(dr) * goals_[c].orientation).normalized();
    goals_[c].tolerance = tolerance_values[c];
  }
  solve_all();
  return true;
}

bool Instance::reset(const double* q, int n) {
  if (q == nullptr || n != num_dofs_ || !all_finite(q, n)) return false;
  current_.assign(q, q + n);
  previous_ = current_;
  solution_out_ = current_;
  // Unlike upstream, the goals follow the new state, so a following solve_velocity increments
  // from where the robot is rather than from a stale goal.
  set_goals_from_configuration(current_);
  return true;
}

void Instance::solve_all() {
  std::vector<double> next = current_;
  for (int c = 0; c < num_chains(); ++c) {
    const ChainSolver& solver = solvers_[c];
    const int dof = chains_[c].dof();
    const int offset = offsets_[c];
    const JointVector warm = Eigen::Map<const JointVector>(current_.data() + offset, dof);
    JointVector q(dof);
    const ChainResult warm_result = solver.solve(goals_[c], warm, warm, options_.max_iterations, &q);
    if (!warm_result.success) {
      // Restarts only when the warm start failed, so tracking stays continuous. The first ones
      // start near the previous solution (a neighbouring branch usually needs only a small move);
      // among their successes the closest one wins. Then uniform seeds, first success taken.
      JointVector seed(dof);
      JointVector candidate(dof);
      bool found = false;
      double best_distance = std::numeric_limits<double>::infinity();
      for (int attempt = 0; attempt < kLocalRestarts; ++attempt) {
        const double spread = kLocalSpread[attempt % 3];
        for (int j = 0; j < dof; ++j) seed[j] = warm[j] + std::normal_distribution<double>(0.0, spread)(random_);
        const ChainResult result = solver.solve(goals_[c], seed, warm, options_.restart_iterations, &candidate);
        const double distance = (candidate - warm).cwiseAbs().maxCoeff();
        if (result.success && distance < best_distance) {
          q = candidate;
          best_distance = distance;
          found = true;
        }
      }
      for (int attempt = 0; !found && attempt < restarts_; ++attempt) {
        for (int j = 0; j < dof; ++j) {
          const Joint& joint = chains_[c].joints[j];
          const double low = std::isfinite(joint.lower) ? joint.lower : warm[j] - M_PI;
          const double high = std::isfinite(joint.upper) ? joint.upper : warm[j] + M_PI;
          seed[j] = std::uniform_real_distribution<double>(low, high)(random_);
        }
        const ChainResult result = solver.solve(goals_[c], seed, warm, options_.restart_iterations, &candidate);
        if (result.success) {
          q = candidate;
          found = true;
        }
      }
    }
    bool finite = true;
    for (int j = 0; j < dof; ++j) finite = finite && std::isfinite(q[j]);
    if (!finite) continue;  // keep the previous solution of this chain
    for (int j = 0; j < dof; ++j) next[offset + j] = q[j];
  }
  previous_ = current_;
  current_ = next;
  solution_out_ = current_;
}

const std::vector<double>& Instance::goal_positions() {
  goal_positions_out_.resize(3 * chains_.size());
  for (std::size_t c = 0; c < chains_.size(); ++c) {
    for (int k = 0; k < 3; ++k) goal_positions_out_[3 * c + k] = goals_[c].position[k];
  }
  return goal_positions_out_;
}

}  // namespace rik
