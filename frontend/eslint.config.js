// ESLint flat config for the dashboard (`npx eslint .` here, or `make lint`).
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["vendor/", "node_modules/"] },
  js.configs.recommended,
  {
    files: ["**/*.js"],
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "module",
      globals: { ...globals.browser },
    },
  },
];
