//! The gemini provider client (being written).
