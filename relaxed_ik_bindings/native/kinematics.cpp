// Forward kinematics and geometric Jacobian of a serial chain.
#include "kinematics.hpp"

namespace rik {
namespace {

// Rotation (revolute/continuous) or translation (prismatic) of one joint at value q.
inline void apply_joint_motion(const Joint& joint, double q, Eigen::Matrix3d* rotation,
                               Eigen::Vector3d* translation) {
  if (joint.type == JointType::kPrismatic) {
    *translation += *rotation * (joint.axis * q);
  } else {
    *rotation = *rotation * Eigen::AngleAxisd(q, joint.axis).toRotationMatrix();
  }
}

}  // namespace

Pose forward(const Chain& chain, const double* q) {
  Eigen::Matrix3d rotation = Eigen::Matrix3d::Identity();
  Eigen::Vector3d translation = Eigen::Vector3d::Zero();
  for (std::size_t i = 0; i < chain.joints.size(); ++i) {
    const Joint& joint = chain.joints[i];
    translation += rotation * joint.origin_translation;
    rotation = rotation * joint.origin_rotation;
    apply_joint_motion(joint, q[i], &rotation, &translation);
  }
  Pose pose;
  pose.position = translation + rotation * chain.tip_translation;
  pose.rotation = rotation * chain.tip_rotation;
  return pose;
}

void forward_with_jacobian(const Chain& chain, const double* q, Pose* pose, Jacobian* jacobian) {
  const int n = chain.dof();
  jacobian->resize(6, n);
  Eigen::Matrix3d rotation = Eigen::Matrix3d::Identity();
  Eigen::Vector3d translation = Eigen::Vector3d::Zero();
  // World axis and origin of each joint; the linear columns need the final ee position first.
  Eigen::Matrix<double, 3, Eigen::Dynamic, Eigen::ColMajor, 3, kMaxChainDof> axes(3, n);
  Eigen::Matrix<double, 3, Eigen::Dynamic, Eigen::ColMajor, 3, kMaxChainDof> origins(3, n);
  for (int i = 0; i < n; ++i) {
    const Joint& joint = chain.joints[i];
    translation += rotation * joint.origin_translation;
    rotation = rotation * joint.origin_rotation;
    axes.col(i) = rotation * joint.axis;
    origins.col(i) = translation;
    apply_joint_motion(joint, q[i], &rotation, &translation);
  }
  pose->position = translation + rotation * chain.tip_translation;
  pose->rotation = rotation * chain.tip_rotation;
  for (int i = 0; i < n; ++i) {
    if (chain.joints[i].type == JointType::kPrismatic) {
      jacobian->block<3, 1>(0, i) = axes.col(i);
      jacobian->block<3, 1>(3, i).setZero();
    } else {
      jacobian->block<3, 1>(0, i) = axes.col(i).cross(pose->position - origins.col(i));
      jacobian->block<3, 1>(3, i) = axes.col(i);
    }
  }
}

}  // namespace rik
