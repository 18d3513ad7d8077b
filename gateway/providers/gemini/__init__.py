"""The Gemini API (generateContent): request, response, stream and error translation."""
