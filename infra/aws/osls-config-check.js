'use strict';
// osls plugin: validate the configuration the functions will load, every section (as the worker
// does), before anything is packaged or deployed. The api function validates only the sections it
// reads at its cold start (core.config.ApiSettings), so this is where a broken routing, model or
// retrieval section is caught: `osls package` / `osls deploy` stop with the config error instead.
// Runs the Lambda's Python on the requirements serverless-python-requirements just installed.
const { execFileSync } = require('child_process');
const path = require('path');

const CHECK = [
  'import json, sys',
  'from core.config import load_settings',
  'from core.errors import ConfigError',
  'try:',
  '    s = load_settings(sys.argv[1], env=json.loads(sys.argv[2]))',
  'except ConfigError as e:',
  '    print(e, file=sys.stderr)',
  '    sys.exit(3)',
  'print(f"altostratus: {sys.argv[1]} is valid ({len(s.models)} models, default route -> {s.routing.default.model})")',
].join('\n');

class ConfigCheck {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { 'before:package:createDeploymentArtifacts': () => this.check() };
  }

  check() {
    const service = this.serverless.service;
    const environment = (service.provider && service.provider.environment) || {};
    const config = environment.ALTO_CONFIG;
    if (!config) return;
    // the ALTO_* values the functions get as plain strings (overrides such as ALTO_QUEUE__MAX_RECEIVES)
    const env = Object.fromEntries(Object.entries(environment).filter(([k, v]) => k.startsWith('ALTO_') && typeof v === 'string'));
    const python = (service.custom && service.custom.bytecode && service.custom.bytecode.python) || 'python3.12';
    const root = this.serverless.config.servicePath;
    try {
      execFileSync(python, ['-c', CHECK, config, JSON.stringify(env)], {
        cwd: root,
        stdio: ['ignore', 'inherit', 'pipe'],
        env: { ...process.env, PYTHONPATH: [path.join(root, '.serverless', 'requirements'), root].join(path.delimiter),
               PYTHONDONTWRITEBYTECODE: '1' },  // never write .pyc into the shared requirements folder
      });
    } catch (e) {
      const detail = e.stderr ? e.stderr.toString().trim() : e.message;
      if (e.status === 3) {
        throw new this.serverless.classes.Error(`${config} is not a valid Altostratus configuration:\n${detail}`);
      }
      throw new this.serverless.classes.Error(
        `could not check ${config} with ${python} (it needs the requirements serverless-python-requirements ` +
        `installed, so list osls-config-check after it in serverless.yml):\n${detail}`);
    }
  }
}

module.exports = ConfigCheck;
