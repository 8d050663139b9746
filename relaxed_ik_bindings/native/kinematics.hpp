// Serial-chain kinematics: the joints between a base link and an end-effector link, with forward
// kinematics and the geometric Jacobian, both expressed in the base link frame.
#pragma once

#include <Eigen/Core>
#include <Eigen/Geometry>

#include <string>
#include <vector>

namespace rik {

// Largest number of moving joints in one chain; bounds the fixed-capacity Jacobian (no heap use
// in the solver loop).
constexpr int kMaxChainDof = 32;

using Jacobian = Eigen::Matrix<double, 6, Eigen::Dynamic, Eigen::ColMajor, 6, kMaxChainDof>;
using JointVector = Eigen::Matrix<double, Eigen::Dynamic, 1, Eigen::ColMajor, kMaxChainDof, 1>;

enum class JointType { kRevolute, kContinuous, kPrismatic };

struct Joint {
  std::string name;
  JointType type = JointType::kRevolute;
  // Pose of this joint's frame (at q = 0) in the frame of the previous moving joint (or the
  // chain base), with every fixed joint in between folded in.
  Eigen::Matrix3d origin_rotation = Eigen::Matrix3d::Identity();
  Eigen::Vector3d origin_translation = Eigen::Vector3d::Zero();
  Eigen::Vector3d axis = Eigen::Vector3d::UnitX();  // unit length, joint frame
  double lower = 0.0;
  double upper = 0.0;
  double velocity = 0.0;  // URDF velocity limit; 0 when absent
};

struct Pose {
  Eigen::Vector3d position = Eigen::Vector3d::Zero();
  Eigen::Matrix3d rotation = Eigen::Matrix3d::Identity();
};

struct Chain {
  std::string base_link;
  std::string ee_link;
  std::vector<Joint> joints;
  // Pose of the ee link in the last moving joint's frame (fixed joints after it folded in).
  Eigen::Matrix3d tip_rotation = Eigen::Matrix3d::Identity();
  Eigen::Vector3d tip_translation = Eigen::Vector3d::Zero();

  int dof() const { return static_cast<int>(joints.size()); }
};

// Pose of the ee link in the base frame for joint values q[0..dof).
Pose forward(const Chain& chain, const double* q);

// Pose plus the 6 x dof geometric Jacobian (rows 0-2 linear velocity, 3-5 angular velocity,
// both in the base frame).
void forward_with_jacobian(const Chain& chain, const double* q, Pose* pose, Jacobian* jacobian);

}  // namespace rik
