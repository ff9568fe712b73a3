"""The review queue: outputs a person should check, kept under the policy's retention."""
