// URDF joint tree -> serial chain. Fixed joints are folded into the neighbouring moving joints
// so the solver's forward kinematics touches only the moving ones.
#include "urdf_model.hpp"

#include <tinyxml2.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace rik {
namespace {

struct UrdfJoint {
  std::string name;
  std::string type;
  std::string parent;
  std::string child;
  Eigen::Matrix3d rotation = Eigen::Matrix3d::Identity();
  Eigen::Vector3d translation = Eigen::Vector3d::Zero();
  Eigen::Vector3d axis = Eigen::Vector3d::UnitX();  // URDF default
  bool has_limit = false;
  double lower = 0.0;
  double upper = 0.0;
  double velocity = 0.0;
};

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

Eigen::Vector3d parse_vector3(const char* text, const std::string& what) {
  std::istringstream stream(text ? text : "");
  Eigen::Vector3d value;
  std::string token;
  for (int i = 0; i < 3; ++i) {
    if (!(stream >> token)) fail(what + ": expected 3 numbers, got '" + (text ? text : "") + "'");
    char* end = nullptr;
    value[i] = std::strtod(token.c_str(), &end);
    if (end == token.c_str() || *end != '\0' || !std::isfinite(value[i])) {
      fail(what + ": '" + token + "' is not a finite number");
    }
  }
  if (stream >> token) fail(what + ": more than 3 numbers in '" + std::string(text) + "'");
  return value;
}

double parse_double(const char* text, const std::string& what) {
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  if (end == text || !std::isfinite(value)) fail(what + ": '" + text + "' is not a finite number");
  while (*end == ' ' || *end == '\t') ++end;
  if (*end != '\0') fail(what + ": '" + text + "' is not a number");
  return value;
}

Eigen::Matrix3d rpy_to_matrix(const Eigen::Vector3d& rpy) {
  // URDF convention: fixed-axis roll (x), pitch (y), yaw (z): R = Rz(yaw) * Ry(pitch) * Rx(roll).
  return (Eigen::AngleAxisd(rpy[2], Eigen::Vector3d::UnitZ()) *
          Eigen::AngleAxisd(rpy[1], Eigen::Vector3d::UnitY()) *
          Eigen::AngleAxisd(rpy[0], Eigen::Vector3d::UnitX()))
      .toRotationMatrix();
}

UrdfJoint parse_joint(const tinyxml2::XMLElement* element) {
  UrdfJoint joint;
  const char* name = element->Attribute("name");
  const char* type = element->Attribute("type");
  if (!name || !type) fail("URDF: a <joint> lacks its name or type attribute");
  joint.name = name;
  joint.type = type;
  const std::string where = "URDF joint '" + joint.name + "'";
  const tinyxml2::XMLElement* parent = element->FirstChildElement("parent");
  const tinyxml2::XMLElement* child = element->FirstChildElement("child");
  if (!parent || !parent->Attribute("link") || !child || !child->Attribute("link")) {
    fail(where + ": missing <parent link=...> or <child link=...>");
  }
  joint.parent = parent->Attribute("link");
  joint.child = child->Attribute("link");
  if (const tinyxml2::XMLElement* origin = element->FirstChildElement("origin")) {
    if (const char* xyz = origin->Attribute("xyz")) joint.translation = parse_vector3(xyz, where + " origin xyz");
    if (const char* rpy = origin->Attribute("rpy")) joint.rotation = rpy_to_matrix(parse_vector3(rpy, where + " origin rpy"));
  }
  if (const tinyxml2::XMLElement* axis = element->FirstChildElement("axis")) {
    if (const char* xyz = axis->Attribute("xyz")) joint.axis = parse_vector3(xyz, where + " axis");
  }
  if (const tinyxml2::XMLElement* limit = element->FirstChildElement("limit")) {
    joint.has_limit = true;
    // URDF defaults lower/upper to 0 when the attribute is absent.
    if (const char* lower = limit->Attribute("lower")) joint.lower = parse_double(lower, where + " lower limit");
    if (const char* upper = limit->Attribute("upper")) joint.upper = parse_double(upper, where + " upper limit");
    if (const char* velocity = limit->Attribute("velocity")) {
      joint.velocity = parse_double(velocity, where + " velocity limit");
    }
  }
  return joint;
}

}  // namespace

Chain load_chain_from_urdf_text(const std::string& urdf_text, const std::string& base_link,
                                const std::string& ee_link) {
  tinyxml2::XMLDocument document;
  if (document.Parse(urdf_text.c_str(), urdf_text.size()) != tinyxml2::XML_SUCCESS) {
    fail(std::string("URDF is not valid XML: ") + document.ErrorStr());
  }
  const tinyxml2::XMLElement* robot = document.FirstChildElement("robot");
  if (!robot) fail("URDF has no <robot> element");

  std::set<std::string> links;
  for (const tinyxml2::XMLElement* e = robot->FirstChildElement("link"); e; e = e->NextSiblingElement("link")) {
    if (const char* name = e->Attribute("name")) links.insert(name);
  }
  std::map<std::string, UrdfJoint> joint_by_child;
  for (const tinyxml2::XMLElement* e = robot->FirstChildElement("joint"); e; e = e->NextSiblingElement("joint")) {
    UrdfJoint joint = parse_joint(e);
    const std::string child = joint.child;
    if (!joint_by_child.emplace(child, std::move(joint)).second) {
      fail("URDF: link '" + child + "' is the child of more than one joint");
    }
  }
  if (!links.count(base_link)) fail("base link '" + base_link + "' is not a link of the URDF");
  if (!links.count(ee_link)) fail("ee link '" + ee_link + "' is not a link of the URDF");

  // Walk up from the ee link to the base link.
  std::vector<const UrdfJoint*> path;
  std::string link = ee_link;
  while (link != base_link) {
    auto it = joint_by_child.find(link);
    if (it == joint_by_child.end()) {
      fail("ee link '" + ee_link + "' is not below base link '" + base_link + "' in the URDF tree");
    }
    path.push_back(&it->second);
    link = it->second.parent;
    if (path.size() > joint_by_child.size()) fail("URDF joint tree has a cycle");
  }

  Chain chain;
  chain.base_link = base_link;
  chain.ee_link = ee_link;
  // Accumulated fixed transform since the last moving joint (or the base).
  Eigen::Matrix3d pending_rotation = Eigen::Matrix3d::Identity();
  Eigen::Vector3d pending_translation = Eigen::Vector3d::Zero();
  for (auto it = path.rbegin(); it != path.rend(); ++it) {
    const UrdfJoint& uj = **it;
    // Compose pending * joint origin.
    const Eigen::Vector3d translation = pending_translation + pending_rotation * uj.translation;
    const Eigen::Matrix3d rotation = pending_rotation * uj.rotation;
    if (uj.type == "fixed") {
      pending_rotation = rotation;
      pending_translation = translation;
      continue;
    }
    Joint joint;
    joint.name = uj.name;
    if (uj.type == "revolute" || uj.type == "continuous") {
      // A revolute joint without <limit> is treated as continuous, as upstream does.
      const bool bounded = uj.type == "revolute" && uj.has_limit;
      joint.type = bounded ? JointType::kRevolute : JointType::kContinuous;
    } else if (uj.type == "prismatic") {
      if (!uj.has_limit) fail("URDF joint '" + uj.name + "': prismatic joint without <limit>");
      joint.type = JointType::kPrismatic;
    } else {
      fail("URDF joint '" + uj.name + "': type '" + uj.type + "' is not supported in an IK chain");
    }
    const double axis_norm = uj.axis.norm();
    if (!(axis_norm > 1e-9)) fail("URDF joint '" + uj.name + "': zero axis");
    joint.axis = uj.axis / axis_norm;
    if (joint.type == JointType::kContinuous) {
      joint.lower = -std::numeric_limits<double>::infinity();
      joint.upper = std::numeric_limits<double>::infinity();
    } else {
      if (uj.lower > uj.upper) fail("URDF joint '" + uj.name + "': lower limit above upper limit");
      joint.lower = uj.lower;
      joint.upper = uj.upper;
    }
    joint.velocity = uj.velocity > 0.0 ? uj.velocity : 0.0;
    joint.origin_rotation = rotation;
    joint.origin_translation = translation;
    chain.joints.push_back(joint);
    pending_rotation.setIdentity();
    pending_translation.setZero();
  }
  chain.tip_rotation = pending_rotation;
  chain.tip_translation = pending_translation;
  if (chain.joints.empty()) fail("chain '" + base_link + "' -> '" + ee_link + "' has no moving joint");
  if (chain.dof() > kMaxChainDof) {
    fail("chain '" + base_link + "' -> '" + ee_link + "' has more than " + std::to_string(kMaxChainDof) + " joints");
  }
  return chain;
}

}  // namespace rik
