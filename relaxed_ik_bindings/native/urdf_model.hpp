// URDF parsing (joints and links only; geometry is ignored) and extraction of the serial chain
// between a base link and an end-effector link.
#pragma once

#include <string>

#include "kinematics.hpp"

namespace rik {

// Builds the chain base_link -> ee_link from the URDF text. Throws std::runtime_error with a
// readable reason (unknown link, ee not below base, unsupported joint type, bad numbers, ...).
Chain load_chain_from_urdf_text(const std::string& urdf_text, const std::string& base_link,
                                const std::string& ee_link);

}  // namespace rik
